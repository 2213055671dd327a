"""GRPO through verl (paper Sec. 4.3: the paper's stage 2 ran on verl) on qsave's own inputs.

:func:`export_verl` writes the RL set as verl parquet rows that carry what verl needs to see the
inputs SFT and ``qsave score`` see: the scoring prompt's messages (one video item per SlowFast
run, Sec. 4.2.1), the video as it was prepared — path, content hash, the ``VideoConfig``
settings, the SlowFast plan (frame times, slow/fast labels, sizes) and a digest of the frames —
and a digest of the prompt's token ids as the checkpoint's processor renders them. verl reads
the rows through :mod:`qsave.train.verl_hook` (``data.custom_cls``), which prepares each video
again with the row's settings and refuses a row whose file, plan, frames or prompt tokens came
out otherwise. The reward is :func:`qsave.train.rewards.compute_score`; ``verl_overrides.txt``
lists what to pass to verl.

Rows have one writer (:func:`export_verl`) and one reader (:func:`read_row`).

>>> PROCESSOR_KWARGS
{'do_sample_frames': False, 'do_resize': False, 'cap_pixels_per_frame': False}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from qsave.data.records import TrainingRecord, build_messages
from qsave.dimensions import Dimension
from qsave.errors import (
    AnnotationError,
    ConfigError,
    ModelError,
    QsaveError,
    VideoError,
    VideoNotFoundError,
)
from qsave.prompts import AnswerFormat
from qsave.scores import content_hash
from qsave.spec import TINY, checkpoint_dir
from qsave.train.common import prompt_messages
from qsave.video.inputs import PreparedVideo, VideoConfig, prepare_video, processor_video_kwargs
from qsave.video.slowfast import SlowFastPlan

QSAVE_COLUMN = "qsave"  # the row's messages, video and prompt digest as JSON (read_row)
DATASET_MODULE = "pkg://qsave.train.verl_hook"  # data.custom_cls.path
DATASET_CLASS = "QsaveVideoDataset"  # data.custom_cls.name
# What every processor call of verl must be given (data.mm_processor_kwargs): the frames come
# sampled and sized by the plan, as in qsave's own processor calls.
PROCESSOR_KWARGS = {k: v for k, v in processor_video_kwargs([]).items()
                    if k not in ("videos", "video_metadata")}

VERL_REWARD_FILE = '''"""Q-Save's GRPO reward for verl: R = R_acc + 0.5·R_fmt (paper Sec. 4.3).

Needs qsave importable in verl's environment (see docs/verl.md).
"""
from qsave.train.rewards import compute_score  # noqa: F401
'''


@dataclass(frozen=True)
class ExportedVideo:
    """A row's video as the export prepared it: enough to prepare it again and check it."""

    row: str  # the record id; every error about this video names it
    path: str  # the file, as verl's machines must see it
    content_hash: str  # sha256 of the file at export (qsave.scores.content_hash)
    settings: dict  # VideoConfig.to_dict() the plan was made with
    plan: dict  # plan_dict(SlowFastPlan): frame times, slow/fast labels, sizes, tokens
    frames_digest: str  # frames_digest() of the prepared runs (decoder drift shows here)

    @property
    def config(self) -> VideoConfig:
        return VideoConfig.from_dict(self.settings)


@dataclass(frozen=True)
class ExportedRow:
    """What a verl row holds for qsave: the scoring prompt and its video."""

    messages: list[dict]  # one user turn: a {"type": "video"} per SlowFast run, then the text
    video: ExportedVideo
    prompt_tokens: int  # tokens of the prompt (generation prompt included), video included
    prompt_digest: str  # ids_digest() of those token ids


@dataclass(frozen=True)
class VerlExport:
    """The files :func:`export_verl` wrote and what they need of verl."""

    data: Path  # train.parquet
    val: Path | None  # val.parquet, when validation records were given
    reward: Path  # qsave_reward.py (compute_score)
    overrides: Path  # verl_overrides.txt, one Hydra override a line
    rows: int
    max_prompt_tokens: int  # data.max_prompt_length written to the overrides
    max_videos: int  # most video items (SlowFast runs) in one prompt


def plan_dict(plan: SlowFastPlan) -> dict:
    """The plan as JSON values (tuples become lists), as rows store and compare it."""
    return json.loads(json.dumps(asdict(plan)))


def frames_digest(prepared: PreparedVideo) -> str:
    """sha256 of the runs' frames (shape and uint8 bytes), in order."""
    digest = hashlib.sha256()
    for frames in prepared.videos:
        digest.update(repr(frames.shape).encode())
        digest.update(np.ascontiguousarray(frames).tobytes())
    return f"sha256:{digest.hexdigest()}"


def ids_digest(ids: Sequence[int]) -> str:
    """sha256 of a token id sequence."""
    return f"sha256:{hashlib.sha256(json.dumps([int(i) for i in ids]).encode()).hexdigest()}"


def run_items(prepared: PreparedVideo) -> list[tuple[np.ndarray, dict]]:
    """verl's video items of a prepared video: (frames (L, h, w, 3) uint8, metadata) per run,
    the metadata as a plain dict (the processor and vLLM both read it)."""
    return [(frames, asdict(meta))
            for frames, meta in zip(prepared.videos, prepared.metadata, strict=True)]


def prompt_inputs(processor: Any, messages: list[dict],
                  videos: Sequence[tuple[np.ndarray, dict]]) -> Any:
    """The processor inputs verl (≥ 0.8) computes for a prompt: the chat template with the
    generation prompt, then the processor on the video items with :data:`PROCESSOR_KWARGS`."""
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return processor(text=[text], videos=[frames for frames, _ in videos],
                     video_metadata=[meta for _, meta in videos], return_tensors="pt",
                     **PROCESSOR_KWARGS)


def read_row(row: Mapping) -> ExportedRow:
    """The qsave part of a verl row written by :func:`export_verl`."""
    text = row.get(QSAVE_COLUMN)
    if not isinstance(text, str):
        raise ConfigError(f"not a row written by qsave's export_verl: no {QSAVE_COLUMN!r} "
                          f"column (columns: {sorted(row)})")
    try:
        values = json.loads(text)
        return ExportedRow(**{**values, "video": ExportedVideo(**values["video"])})
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ConfigError(f"malformed {QSAVE_COLUMN!r} column: {error}") from error


def load_processor(model: str, revision: str | None = None) -> Any:
    """The processor of ``model`` (a checkpoint folder, a hub id, ``"tiny"`` or
    ``"tiny-demo"``): the one verl will load from the checkpoint it trains."""
    if model == TINY:
        from qsave.model.tiny import build_tiny

        return build_tiny(seed=0).processor
    from transformers import AutoProcessor

    source = checkpoint_dir(model) or model
    try:
        return AutoProcessor.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load the processor of {model!r}: {error}") from error


def export_verl(records: Sequence[TrainingRecord], out_dir: str | Path, processor: Any,
                video: VideoConfig = VideoConfig(),  # noqa: B008 (frozen)
                val_records: Sequence[TrainingRecord] = ()) -> VerlExport:
    """Write ``train.parquet`` (and ``val.parquet``), ``qsave_reward.py`` and
    ``verl_overrides.txt`` for GRPO on verl with ``video`` preprocessing (Sec. 4.2.1, 4.3);
    ``processor``: that of the checkpoint verl will train (:func:`load_processor`).

    Each video is prepared once; a record whose prompt is not the one ``qsave score`` asks
    raises ``AnnotationError``, one whose video cannot be prepared a ``VideoError``, naming it.
    """
    if not records:
        raise ConfigError("no records to export")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prepared: dict[str, tuple[PreparedVideo, str]] = {}
    rows = [_exported(r, processor, video, prepared) for r in records]
    val_rows = [_exported(r, processor, video, prepared) for r in val_records]
    data = _write_rows(out / "train.parquet", records, rows)
    val = _write_rows(out / "val.parquet", val_records, val_rows) if val_rows else None
    reward = out / "qsave_reward.py"
    reward.write_text(VERL_REWARD_FILE, encoding="utf-8")
    longest = max(row.prompt_tokens for row in rows + val_rows)
    overrides = out / "verl_overrides.txt"
    overrides.write_text("\n".join(verl_overrides(data, val, reward, longest)) + "\n",
                         encoding="utf-8")
    return VerlExport(data, val, reward, overrides, len(rows), longest,
                      max(len(v.videos) for v, _ in prepared.values()))


def verl_overrides(data: Path, val: Path | None, reward: Path, max_prompt_tokens: int
                   ) -> list[str]:
    """The Hydra overrides that make verl read the rows through the qsave dataset class."""
    lines = [f"data.train_files={data}"]
    if val is not None:
        lines.append(f"data.val_files={val}")
    else:  # verl always builds a validation set; without one, it is never run
        lines += [f"data.val_files={data}", "trainer.val_before_train=False",
                  "trainer.test_freq=-1"]
    lines += [f"data.max_prompt_length={max_prompt_tokens}",
              f"data.custom_cls.path={DATASET_MODULE}", f"data.custom_cls.name={DATASET_CLASS}"]
    lines += [f"++data.mm_processor_kwargs.{k}={v}" for k, v in PROCESSOR_KWARGS.items()]
    return [*lines, f"custom_reward_function.path={reward}",
            "custom_reward_function.name=compute_score", "algorithm.adv_estimator=grpo"]


def _write_rows(path: Path, records: Sequence[TrainingRecord], rows: list[ExportedRow]) -> Path:
    import pandas as pd

    table = [_verl_row(i, record, row) for i, (record, row) in enumerate(zip(records, rows,
                                                                               strict=True))]
    pd.DataFrame(table).to_parquet(path, index=False)
    return path


def _verl_row(index: int, record: TrainingRecord, row: ExportedRow) -> dict:
    return {
        "data_source": "qsave",
        "ability": f"video_quality/{record.dimension}",
        "reward_model": {"style": "rule", "ground_truth": record.rating},
        "extra_info": {"index": index, "id": record.id, "dimension": record.dimension,
                       "answer_format": record.answer_format, "mos": record.mos},
        QSAVE_COLUMN: json.dumps(asdict(row)),
    }


def _exported(record: TrainingRecord, processor: Any, config: VideoConfig,
              prepared: dict[str, tuple[PreparedVideo, str]]) -> ExportedRow:
    """The record's row: its video prepared as ``qsave score`` prepares it, its prompt."""
    if record.video not in prepared:
        with naming_errors(f"record {record.id!r}", record.video):
            prepared[record.video] = (prepare_video(record.video, config),
                                      content_hash(record.video))
    video, digest = prepared[record.video]
    messages = _scoring_messages(record, video)
    ids = prompt_inputs(processor, messages, run_items(video))["input_ids"][0].tolist()
    exported = ExportedVideo(record.id, record.video, digest, config.to_dict(),
                             plan_dict(video.plan), frames_digest(video))
    return ExportedRow(messages, exported, len(ids), ids_digest(ids))


def _scoring_messages(record: TrainingRecord, video: PreparedVideo) -> list[dict]:
    """The record's prompt messages (SFT's :func:`prompt_messages`: a video item per run),
    checked to be the prompt ``qsave score`` asks for its video, prompt and dimension."""
    asked = prompt_messages(record, video)
    try:
        messages = build_messages(record.video, record.prompt, Dimension(record.dimension),
                                  AnswerFormat(record.answer_format))
    except ValueError as error:
        raise AnnotationError(f"record {record.id!r}: {error}") from error
    if asked != prompt_messages(replace(record, messages=messages), video):
        raise AnnotationError(
            f"record {record.id!r}: its prompt is not the one `qsave score` asks for this "
            "video, prompt and dimension (a system message or edited text); GRPO would train "
            "on a prompt scoring never sees: rebuild the records with `qsave data records`")
    return asked


@contextmanager
def naming_errors(where: str, path: str) -> Iterator[None]:
    """Failures to read or prepare the video ``path`` as qsave errors that name ``where`` (a
    record or a row): a missing file is a ``VideoNotFoundError``, an unreadable one a
    ``VideoError``."""
    try:
        yield
    except FileNotFoundError as error:
        raise VideoNotFoundError(f"{where}: video {path} does not exist") from error
    except QsaveError as error:
        raise type(error)(f"{where}: {error}") from error
    except OSError as error:
        raise VideoError(f"{where}: cannot read video {path}: {error.strerror or error}") from error
