import numpy as np
import pytest
import torch
from transformers import AutoProcessor, Qwen3VLForConditionalGeneration
from transformers.video_utils import VideoMetadata

from qsave.dimensions import RATINGS
from qsave.model.tiny import SPECIAL_TOKENS, build_tokenizer


def _video_inputs(processor, frames: np.ndarray, text: str = "Rate it."):
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]
    chat = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    n = len(frames)
    metadata = VideoMetadata(total_num_frames=n, fps=8.0, frames_indices=list(range(n)))
    return processor(
        text=[chat],
        videos=[frames],
        video_metadata=[metadata],
        do_sample_frames=False,
        do_resize=False,
        return_tensors="pt",
    )


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(4, 64, 96, 3), dtype=np.uint8)


@pytest.mark.parametrize("word", [*RATINGS, *(f" {r}" for r in RATINGS)])
def test_rating_words_are_single_tokens(tiny, word):
    assert len(tiny.processor.tokenizer.tokenize(word)) == 1


def test_special_tokens_are_atomic(tiny):
    tokenizer = tiny.processor.tokenizer
    for token in SPECIAL_TOKENS:
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == token


def test_tokenizer_is_deterministic():
    assert build_tokenizer().get_vocab() == build_tokenizer().get_vocab()


def test_chat_template_is_qwen_style(tiny):
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Hi"}]}]
    text = tiny.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Hi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_config_is_valid_qwen3vl(tiny):
    config = tiny.model.config
    text, vision = config.text_config, config.vision_config
    assert text.num_hidden_layers == 2 and vision.depth == 2
    assert all(0 <= i < vision.depth for i in vision.deepstack_visual_indexes)
    assert sum(text.rope_parameters["mrope_section"]) == text.head_dim // 2
    assert vision.out_hidden_size == text.hidden_size
    assert text.vocab_size == len(tiny.processor.tokenizer)
    n_params = sum(p.numel() for p in tiny.model.parameters())
    assert 0.5e6 < n_params < 2e6, n_params


def test_forward_on_video(tiny, frames):
    inputs = _video_inputs(tiny.processor, frames)
    video_token = tiny.model.config.video_token_id
    # 4 frames of 64×96 → grid (2, 4, 6) patches → 2·4·6 / merge² = 12 video tokens
    assert inputs["video_grid_thw"].tolist() == [[2, 4, 6]]
    assert int((inputs["input_ids"] == video_token).sum()) == 12
    with torch.no_grad():
        logits = tiny.model(**inputs).logits
    assert logits.shape == (*inputs["input_ids"].shape, len(tiny.processor.tokenizer))
    assert torch.isfinite(logits).all()


def test_save_reload_gives_identical_logits(tiny, tiny_dir, frames):
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_dir, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(tiny_dir, local_files_only=True)
    assert processor.tokenizer.get_vocab() == tiny.processor.tokenizer.get_vocab()
    inputs = _video_inputs(processor, frames)
    reference = _video_inputs(tiny.processor, frames)
    assert torch.equal(inputs["input_ids"], reference["input_ids"])
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, tiny.model(**reference).logits)


def test_forward_on_synthetic_clip(tiny, tmp_path):
    """A real H.264 clip from the synthetic corpus, decoded by PyAV, through processor and model."""
    import av

    from qsave.data.synthetic import SynthConfig, write_corpus

    corpus = write_corpus(tmp_path, SynthConfig(n=2, seed=3, size=64, fps=8, seconds=1.0))
    clip = corpus.clips[0]
    with av.open(str(tmp_path / clip.path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert frames.shape == (8, 64, 64, 3)
    inputs = _video_inputs(tiny.processor, frames, text=clip.prompt)
    assert inputs["video_grid_thw"].tolist() == [[4, 4, 4]]
    with torch.no_grad():
        logits = tiny.model(**inputs).logits
    assert torch.isfinite(logits).all()
