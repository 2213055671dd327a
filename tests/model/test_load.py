"""Checkpoint loading and the rating-token check (Sec. 4.2.2; STYLE.md item 11)."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from qsave.dimensions import RATINGS
from qsave.errors import ConfigError, ModelError
from qsave.model import load as load_module
from qsave.model.load import _DTYPES, TINY_RANDOM_ID, load, rating_token_ids, resolve_dtype
from qsave.prompts import AnswerFormat
from qsave.spec import DTYPES, TINY, ScorerSpec, checkpoint_dir, resolve_spec


def splitting_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE that never saw "Excellent": the word splits into several tokens."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|im_start|>", "</think>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    bpe.train_from_iterator(["assistant", "Bad", "Poor", "Fair", "Good"] * 50, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, additional_special_tokens=["<|im_start|>", "</think>"]
    )


@pytest.mark.parametrize("fmt", list(AnswerFormat))
def test_rating_tokens_of_the_tiny_tokenizer(tiny, fmt):
    tokenizer = tiny.processor.tokenizer
    ids = rating_token_ids(tokenizer, fmt)
    assert [tokenizer.decode([i]) for i in ids] == list(RATINGS)  # ascending: Bad … Excellent


@pytest.mark.parametrize("fmt", list(AnswerFormat))
def test_a_rating_word_that_splits_fails_clearly(fmt):
    tokenizer = splitting_tokenizer()
    assert len(tokenizer.tokenize("Excellent")) > 1
    with pytest.raises(ModelError, match=r"'Excellent' is not a single token after"):
        rating_token_ids(tokenizer, fmt)


def test_load_tiny_records_model_and_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("QSAVE_CACHE", str(tmp_path))  # no cached demo checkpoint
    assert checkpoint_dir(TINY) is None
    loaded = load(ScorerSpec(TINY, device="cpu"))
    assert loaded.info.id == TINY_RANDOM_ID
    assert (loaded.info.dtype, loaded.info.device) == ("float32", "cpu")
    assert loaded.processor.tokenizer.padding_side == "left"
    assert loaded.rating_ids == rating_token_ids(loaded.processor.tokenizer, "rating-first")


def test_load_directory_and_tiny_stays_random_beside_a_trained_cache(tiny, tiny_dir,
                                                                       monkeypatch, tmp_path):
    loaded = load(ScorerSpec(str(tiny_dir), dtype="float32", answer_format="think-first"))
    assert loaded.info.id == str(tiny_dir.resolve())
    for name, param in tiny.model.state_dict().items():
        assert torch.equal(param, loaded.model.state_dict()[name]), name
    # a model retrained by `qsave demo --train` in the cache: only its folder selects it
    (tmp_path / "tiny-demo").symlink_to(tiny_dir, target_is_directory=True)
    monkeypatch.setenv("QSAVE_CACHE", str(tmp_path))
    assert checkpoint_dir(TINY) is None and resolve_spec(TINY)[1] is None
    assert load(ScorerSpec(TINY)).info.id == TINY_RANDOM_ID
    assert load(ScorerSpec(str(tmp_path / "tiny-demo"))).info.id == str(tiny_dir.resolve())


def test_missing_checkpoint_and_bad_dtype_raise(tmp_path):
    with pytest.raises(ModelError, match="cannot load checkpoint"):
        load(ScorerSpec(str(tmp_path / "nothing-here")))
    with pytest.raises(ConfigError, match="dtype 'float8'"):
        ScorerSpec(dtype="float8")
    assert set(DTYPES) == set(_DTYPES)  # the spec's names are the ones load() maps
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.bfloat16


def test_lora_adapter_is_merged_into_its_base(tiny_dir, tmp_path):
    peft = pytest.importorskip("peft")
    base = load(ScorerSpec(str(tiny_dir))).model
    lora = peft.get_peft_model(
        base, peft.LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)
    )
    lora.save_pretrained(tmp_path / "adapter")
    expected = lora.merge_and_unload().state_dict()
    loaded = load(ScorerSpec(str(tiny_dir), adapter=str(tmp_path / "adapter")))
    assert loaded.info.adapter == str(tmp_path / "adapter")
    fresh = load_module.load(ScorerSpec(str(tiny_dir))).model.state_dict()
    changed = [n for n, p in loaded.model.state_dict().items() if not torch.equal(p, fresh[n])]
    assert changed and all("q_proj" in n for n in changed)
    for name in changed:
        assert torch.allclose(loaded.model.state_dict()[name], expected[name], atol=1e-6)
