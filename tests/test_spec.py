"""The scorer spec: defaults written once, saved beside a checkpoint, read back on load."""

import json
import shutil

import pytest

from qsave.cli import main
from qsave.data.synthetic import SynthConfig, write_corpus
from qsave.errors import ConfigError
from qsave.evaluator import Evaluator
from qsave.jsonl import read_jsonl
from qsave.prompts import AnswerFormat
from qsave.spec import SPEC_FILE, ScorerSpec, resolve_spec
from qsave.video.inputs import VideoConfig

UNIFORM = VideoConfig(mode="uniform", uniform_fps=8.0)


@pytest.fixture(scope="module")
def uniform_checkpoint(tiny_dir, tmp_path_factory):
    """The tiny checkpoint as `qsave train` leaves it: trained on uniform 8 fps frames."""
    folder = tmp_path_factory.mktemp("ckpt") / "final"
    shutil.copytree(tiny_dir, folder)
    spec = ScorerSpec(answer_format=AnswerFormat.THINK_FIRST, video=UNIFORM, max_new_tokens=48)
    spec.save(folder)
    return folder


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec-clip")
    return root / write_corpus(root, SynthConfig(n=1, seed=1, seconds=1.0)).clips[0].path


def test_the_checkpoint_file_is_read_back_and_flags_override_it(uniform_checkpoint):
    saved = json.loads((uniform_checkpoint / SPEC_FILE).read_text())
    assert set(saved) == {"answer_format", "video", "max_new_tokens", "dimensions"}
    spec, source = resolve_spec(str(uniform_checkpoint))
    assert source == uniform_checkpoint.resolve() / SPEC_FILE
    assert (spec.video, spec.answer_format, spec.max_new_tokens) == (UNIFORM, "think-first", 48)
    spec, _ = resolve_spec(str(uniform_checkpoint), video={"mode": "slowfast"},
                           answer_format="rating-first")
    assert spec.video == VideoConfig(mode="slowfast", uniform_fps=8.0)
    assert spec.answer_format is AnswerFormat.RATING_FIRST
    untuned, source = resolve_spec("Qwen/Qwen3-VL-8B-Instruct")  # no file: the defaults
    assert source is None and untuned == ScorerSpec("Qwen/Qwen3-VL-8B-Instruct")


def test_qsave_score_uses_the_frames_the_checkpoint_was_trained_on(uniform_checkpoint, clip,
                                                                   tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    args = ["score", str(clip), "--model", str(uniform_checkpoint), "--dimensions", "visual",
            "--think-first-reading", "empty-think"]  # the random model's analyses never close
    assert main([*args, "-o", str(out)]) == 0
    assert "scorer settings of the checkpoint" in capsys.readouterr().out
    [(_, row)] = read_jsonl(out).rows
    assert row["settings"]["video"]["mode"] == "uniform"
    assert row["settings"]["video"]["uniform_fps"] == 8.0
    assert row["settings"]["answer_format"] == "think-first"
    assert row["settings"]["think_first_reading"] == "empty-think"
    assert row["video"]["slow_frames"] == row["video"]["frames"] == 8  # 1 s at 8 fps, one run
    assert main([*args, "-o", str(out), "--video-mode", "slowfast"]) == 0  # a flag wins
    rows = [r for _, r in read_jsonl(out).rows]
    assert [r["settings"]["video"]["mode"] for r in rows] == ["uniform", "slowfast"]


def test_the_api_reads_the_checkpoint_file_too(uniform_checkpoint):
    evaluator = Evaluator.from_pretrained(str(uniform_checkpoint))
    assert evaluator.spec.video == UNIFORM
    assert evaluator.settings(evaluator.spec.dimensions, True)["max_new_tokens"] == 48


def test_the_spec_checks_its_values(tmp_path):
    with pytest.raises(ConfigError, match="unknown answer format 'rating-last'"):
        ScorerSpec(answer_format="rating-last")
    with pytest.raises(ConfigError, match="unknown scorer settings"):
        ScorerSpec.from_dict({"modle": "tiny"})
    with pytest.raises(ConfigError, match="max_new_tokens"):
        ScorerSpec(max_new_tokens=0)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / SPEC_FILE).write_text('{"video": {"mode": "uniform"}, "lr": 1}')
    with pytest.raises(ConfigError, match=SPEC_FILE):
        resolve_spec(str(tmp_path))


@pytest.mark.parametrize("video", [{"uniform_fps": float("nan")},
                                   {"slowfast": {"flat_std": float("inf")}},
                                   {"decode": {"fps": float("nan")}}])
def test_nan_and_inf_video_settings_are_refused(video):
    with pytest.raises(ConfigError, match="must be a"):
        resolve_spec("tiny", video=video)


def test_limits_are_neither_saved_nor_a_setting(tmp_path):
    spec = resolve_spec("tiny", limits={"max_prompt_tokens": 8, "video": {"max_pixels": 64}})[0]
    assert spec.limits.max_prompt_tokens == 8 and spec.limits.video.max_pixels == 64
    assert "limits" not in json.loads(spec.save(tmp_path).read_text())
    with pytest.raises(ConfigError, match="unknown limits settings"):
        resolve_spec("tiny", limits={"max_prompt_words": 8})
