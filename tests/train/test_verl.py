"""GRPO on verl with qsave's inputs: the export, and the verl-side hook against `qsave score`'s
own preprocessing (the same frames, sizes and prompt tokens), on synthetic clips with the tiny
model's real Qwen3-VL processor. verl itself is not installed here."""

import copy
import importlib.util
import json
import shutil
from dataclasses import replace

import pandas as pd
import pytest
import torch

from helpers import evaluator_on
from qsave.cli import main
from qsave.data.records import build_messages, write_records
from qsave.dimensions import Dimension
from qsave.errors import AnnotationError, ConfigError, VideoError, VideoNotFoundError
from qsave.evaluator import ScoreItem
from qsave.model import scorer
from qsave.prompts import AnswerFormat
from qsave.spec import ScorerSpec
from qsave.train import verl_hook
from qsave.train.verl import PROCESSOR_KWARGS, QSAVE_COLUMN, export_verl, read_row, run_items
from qsave.train.verl_hook import (
    QsaveVideoMixin,
    check_rows,
    check_verl_config,
    checkpoint_video,
    row_inputs,
    row_messages,
)
from qsave.video.inputs import VideoConfig, prepare_video

KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values_videos",
        "video_grid_thw")


@pytest.fixture(scope="module")
def picked(corpus_records):
    """Three records: three clips, each with another dimension."""
    dims = ("visual", "dynamic", "alignment")
    videos = sorted({r.video for r in corpus_records["all"]})[:3]
    return [next(r for r in corpus_records["all"] if r.video == v and r.dimension == d)
            for v, d in zip(videos, dims, strict=True)]


@pytest.fixture(scope="module")
def exported(picked, tiny, tmp_path_factory):
    out = export_verl(picked, tmp_path_factory.mktemp("verl"), tiny.processor)
    return out, [row.to_dict() for _, row in pd.read_parquet(out.data).iterrows()]


def scoring_inputs(tiny, record, video=None, answers=("",)):
    """What `qsave score` gives the model for this record's video, prompt and dimension:
    `Evaluator.prepare` (hash, decode, SlowFast plan), then the scorer's whole-prompt encoding
    (answers=[""]: the generation prompt, nothing forced after it)."""
    evaluator = evaluator_on(tiny, answer_format=record.answer_format,
                             video=video or VideoConfig())
    dim = Dimension(record.dimension)
    ready = evaluator.prepare(ScoreItem(record.video, record.prompt), [dim], False)
    item = scorer.VideoPrompt(ready.video, record.prompt)
    setup = evaluator.backend.setup
    return scorer.encode_independent(setup, [item], [dim], None if answers is None
                                     else list(answers)).batch


def test_export_writes_rows_reward_and_overrides(exported, picked):
    out, rows = exported
    assert out.rows == len(picked) == len(rows) and out.val is None
    for record, row in zip(picked, rows, strict=True):
        assert row["reward_model"]["ground_truth"] == record.rating
        assert row["extra_info"]["id"] == record.id
        assert row["extra_info"]["answer_format"] == record.answer_format
        assert "prompt" not in row  # verl's own dataset class must not read these rows
        qsave = read_row(row)
        prepared = prepare_video(record.video)  # the plan qsave score makes
        assert qsave.video.plan["timestamps"] == list(prepared.plan.timestamps)
        assert qsave.video.plan["slow"] == list(prepared.plan.slow)
        assert qsave.video.plan["slow_size"] == list(prepared.plan.slow_size)
        assert qsave.video.settings == VideoConfig().to_dict()
        items = qsave.messages[0]["content"]
        assert [i["type"] for i in items] == ["video"] * len(prepared.videos) + ["text"]
    namespace = {}
    exec(out.reward.read_text(), namespace)  # the file verl imports
    assert namespace["compute_score"]("qsave", f"<think>x</think>{picked[0].rating}",
                                      picked[0].rating, rows[0]["extra_info"]) == 1 + 0.5 * 1
    lines = out.overrides.read_text().split()
    assert "data.custom_cls.path=pkg://qsave.train.verl_hook" in lines
    assert "data.custom_cls.name=QsaveVideoDataset" in lines
    assert "++data.mm_processor_kwargs.do_resize=False" in lines
    longest = max(read_row(r).prompt_tokens for r in rows)
    assert f"data.max_prompt_length={longest}" in lines


def test_hook_gives_the_inputs_of_qsave_score(exported, picked, tiny):
    _, rows = exported
    for record, row in zip(picked, rows, strict=True):
        hook = row_inputs(row, tiny.processor)
        scored = scoring_inputs(tiny, record)
        for key in KEYS:
            assert torch.equal(hook[key], scored[key]), (record.id, key)
        # `qsave score` forces its answer start after the same prompt: the prompt part agrees
        forced = scoring_inputs(tiny, record, answers=None)["input_ids"][0]
        start = tiny.processor.tokenizer.encode(scorer.assistant_start(
            AnswerFormat(record.answer_format)), add_special_tokens=False)
        assert forced.tolist() == hook["input_ids"][0].tolist() + start


def test_verl_gets_the_slowfast_runs(exported, picked):
    _, rows = exported
    messages = QsaveVideoMixin._build_messages(None, rows[0], "prompt")
    assert messages == row_messages(rows[0])
    images, videos, audios = QsaveVideoMixin._process_multi_modal_info(messages, 16, {})
    expected = run_items(prepare_video(picked[0].video))
    assert images is None and audios is None and len(videos) == len(expected) > 0
    for (frames, meta), (want, want_meta) in zip(videos, expected, strict=True):
        assert frames.dtype == want.dtype and (frames == want).all() and meta == want_meta
        assert len(frames) % 2 == 0  # whole temporal patches


def test_changed_or_missing_video_names_the_row(picked, tiny, tmp_path):
    clip = tmp_path / "clip.mp4"
    shutil.copyfile(picked[0].video, clip)
    record = replace(picked[0], video=str(clip))
    out = export_verl([record], tmp_path / "verl", tiny.processor)
    row = pd.read_parquet(out.data).iloc[0].to_dict()
    assert row_inputs(row, tiny.processor)["input_ids"].shape[0] == 1
    clip.write_bytes(clip.read_bytes() + b"\0")
    with pytest.raises(VideoError, match=rf"row '{record.id}': video .*clip.mp4 changed"):
        row_inputs(row, tiny.processor)
    clip.unlink()
    with pytest.raises(VideoNotFoundError, match=rf"row '{record.id}': video .* does not exist"):
        row_inputs(row, tiny.processor)
    with pytest.raises(VideoNotFoundError, match=rf"record '{record.id}': video .* not exist"):
        export_verl([record], tmp_path / "again", tiny.processor)


def test_a_plan_or_frames_other_than_exported_are_refused(exported, tiny):
    _, rows = exported
    values = json.loads(rows[0][QSAVE_COLUMN])
    moved = copy.deepcopy(values)
    moved["video"]["plan"]["timestamps"][-1] += 0.5
    with pytest.raises(VideoError, match=r"another SlowFast plan .*\['timestamps'\] differ"):
        row_inputs({**rows[0], QSAVE_COLUMN: json.dumps(moved)}, tiny.processor)
    values["video"]["frames_digest"] = "sha256:0"
    with pytest.raises(VideoError, match="other frames than at the export"):
        row_inputs({**rows[0], QSAVE_COLUMN: json.dumps(values)}, tiny.processor)


def test_rows_of_other_video_settings_are_refused(exported, picked, tiny, tmp_path):
    """Decided: a row is prepared with its own settings; asked for others, it is refused."""
    _, rows = exported
    row_id = picked[0].id
    assert torch.equal(row_inputs(rows[0], tiny.processor, VideoConfig())["input_ids"],
                       row_inputs(rows[0], tiny.processor)["input_ids"])
    with pytest.raises(ConfigError, match=rf"row '{row_id}' was exported with other video "
                                          r"settings \(\['mode'\] differ"):
        row_inputs(rows[0], tiny.processor, VideoConfig(mode="uniform"))
    # verl: the settings saved with the checkpoint it trains (qsave_scorer.json)
    checkpoint = tmp_path / "checkpoint"
    tiny.processor.save_pretrained(checkpoint)
    other = VideoConfig().merged({"decode": {"fps": 4.0}})
    ScorerSpec(video=other).save(checkpoint)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    assert checkpoint_video(tokenizer) == other
    with pytest.raises(ConfigError, match=r"\['decode'\] differ"):
        check_rows(rows, tokenizer, checkpoint_video(tokenizer))
    assert checkpoint_video(tiny.processor.tokenizer) is None  # no checkpoint: the rows decide


def test_a_prompt_rendered_otherwise_is_refused(exported, picked, tiny):
    """Another tokenizer, chat template or transformers version renders other prompt tokens."""
    _, rows = exported
    processor = copy.deepcopy(tiny.processor)
    processor.chat_template = processor.chat_template.replace("'\\n'", "'\\n\\n'", 1)
    with pytest.raises(ConfigError, match=rf"row '{picked[0].id}': this processor renders the "
                                          "prompt as .* tokens, the export as"):
        row_inputs(rows[0], processor)


def test_a_prompt_scoring_never_asks_is_not_exported(picked, tiny, tmp_path):
    record = picked[0]
    fmt = AnswerFormat(record.answer_format)
    with_system = build_messages(record.video, record.prompt, Dimension(record.dimension), fmt,
                                 record.target, system="You are a judge.")
    with pytest.raises(AnnotationError, match=rf"record '{record.id}': its prompt is not the "
                                              "one `qsave score` asks"):
        export_verl([replace(record, messages=with_system)], tmp_path, tiny.processor)


def test_verl_must_pass_qsave_processor_settings():
    with pytest.raises(ConfigError, match=r"\+\+data\.mm_processor_kwargs\.do_resize=False"):
        check_verl_config({"mm_processor_kwargs": {"do_sample_frames": False}})
    check_verl_config({"mm_processor_kwargs": dict(PROCESSOR_KWARGS)})


@pytest.mark.skipif(importlib.util.find_spec("verl") is not None, reason="verl is installed")
def test_the_dataset_class_asks_for_verl():
    with pytest.raises(ImportError, match=r"needs verl >= 0\.8 installed"):
        verl_hook.QsaveVideoDataset  # noqa: B018 (the lookup is what verl does)
    with pytest.raises(AttributeError):
        verl_hook.NoSuchDataset  # noqa: B018


def test_cli_exports_with_the_checkpoint_settings(picked, tmp_path, capsys):
    records = tmp_path / "rl.jsonl"
    write_records(picked, records)
    out = tmp_path / "verl"
    assert main(["data", "export-verl", "--records", str(records), "-o", str(out),
                 "--model", "tiny", "--video-mode", "uniform"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {len(picked)} rows" in printed and "verl_overrides.txt" in printed
    row = pd.read_parquet(out / "train.parquet").iloc[0].to_dict()
    assert read_row(row).video.config.mode == "uniform"
    assert main(["data", "export-verl", "--records", str(tmp_path / "none.jsonl"),
                 "-o", str(out)]) != 0
    assert "none.jsonl" in capsys.readouterr().err
