"""verl's side of GRPO on qsave's inputs: the SlowFast frames (paper Sec. 4.2.1) and the scoring
prompt, so that stage 2 (Sec. 4.3) trains on what SFT and ``qsave score`` see.

verl (≥ 0.8) lets a dataset class replace its multimodal preprocessing: ``data.custom_cls``
names the class, the agent loop asks the class's ``_process_multi_modal_info`` for a prompt's
videos, and ``data.mm_processor_kwargs`` reaches every processor call (the prompt tokens, the
training forward's pixels, vLLM's rollout). ``QsaveVideoDataset`` is verl's ``RLHFDataset``
with :class:`QsaveVideoMixin`: the prompt is the row's messages (``qsave score``'s, a video
item per SlowFast run) and the videos are the row's runs, prepared again by qsave's own code
(:func:`qsave.video.inputs.prepare_video`) with the row's settings. Each time, the file must
still have the exported content hash, and the plan (frame times, labels, sizes) and the frames
must come out as exported; when the dataset loads, the first row must render to the exported
prompt tokens (a tokenizer, chat template or transformers version other than the export's
shows there). The processor gets ``do_sample_frames=False, do_resize=False``
(:data:`qsave.train.verl.PROCESSOR_KWARGS`), as qsave's own calls do.

Settings: a row is prepared with the settings it was exported with; where other settings are
asked for (``row_inputs(video=...)``, or the ``qsave_scorer.json`` of the checkpoint verl
trains), the row is refused with a ``ConfigError`` naming it: export again with those.

verl is imported only when ``QsaveVideoDataset`` is looked up, so this module imports without
it; :func:`row_inputs` computes what verl's processor calls compute, for tests and checks.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

import numpy as np

from qsave.errors import ConfigError, VideoError
from qsave.prompts import ADDED_TOKENS
from qsave.scores import content_hash
from qsave.spec import checkpoint_settings
from qsave.train.verl import (
    DATASET_CLASS,
    PROCESSOR_KWARGS,
    ExportedVideo,
    frames_digest,
    ids_digest,
    naming_errors,
    plan_dict,
    prompt_inputs,
    read_row,
    run_items,
)
from qsave.video.inputs import PreparedVideo, VideoConfig, prepare_video

VIDEO_KEY = "qsave_video"  # a video item's reference to its row's video (JSON)
PREPARED_CACHE = 8  # prepared videos kept per process: a prompt's G rollouts prepare it once


def row_messages(row: Mapping) -> list[dict]:
    """The row's messages for verl's chat template, each video item carrying its file and the
    row's video (for :func:`message_videos`)."""
    exported = read_row(row)
    reference = json.dumps(asdict(exported.video))
    item = {"type": "video", "video": exported.video.path, VIDEO_KEY: reference}
    return [{**m, "content": [item if part.get("type") == "video" else part
                              for part in m["content"]]} for m in exported.messages]


def message_videos(messages: Iterable[dict]) -> list[tuple[np.ndarray, dict]]:
    """(frames (L, h, w, 3) uint8, metadata) of every video item, in order: each row's SlowFast
    runs, prepared again and checked (:func:`prepare_exported`)."""
    items = [part for m in messages if isinstance(m.get("content"), list)
             for part in m["content"] if part.get("type") == "video"]
    videos = []
    for reference, group in itertools.groupby(items, key=lambda part: part.get(VIDEO_KEY)):
        if reference is None:
            raise ConfigError("a video item without qsave's reference: verl's rows must come "
                              "from qsave.train.verl.export_verl, read by QsaveVideoDataset")
        video = ExportedVideo(**json.loads(reference))
        prepared = prepare_exported(video)
        count = len(list(group))
        if count != len(prepared.videos):
            raise ConfigError(f"row {video.row!r}: {count} video items for "
                              f"{len(prepared.videos)} SlowFast runs")
        videos += run_items(prepared)
    return videos


def prepare_exported(video: ExportedVideo) -> PreparedVideo:
    """The row's video prepared with the row's settings; ``VideoError`` naming the row when the
    file is missing or changed, or when its SlowFast plan or frames are not the exported ones."""
    where = f"row {video.row!r}"
    with naming_errors(where, video.path):
        found = content_hash(video.path)
    if found != video.content_hash:
        raise VideoError(f"{where}: video {video.path} changed since the export ({found}, "
                         f"exported {video.content_hash}); export the records again")
    with naming_errors(where, video.path):
        prepared = _prepared(video.path, found, json.dumps(video.settings, sort_keys=True))
    plan = plan_dict(prepared.plan)
    if plan != video.plan:
        fields = sorted(k for k in plan.keys() | video.plan.keys()
                        if plan.get(k) != video.plan.get(k))
        raise VideoError(f"{where}: {video.path} now gives another SlowFast plan than the "
                         f"export (fields {fields} differ: another decoder or qsave version?); "
                         "export the records again")
    if frames_digest(prepared) != video.frames_digest:
        raise VideoError(f"{where}: {video.path} now decodes to other frames than at the export "
                         "(the same plan: another FFmpeg build?); export the records again")
    return prepared


@functools.lru_cache(maxsize=PREPARED_CACHE)
def _prepared(path: str, digest: str, settings: str) -> PreparedVideo:
    """Keyed by the content hash too, so a changed file is never served from the cache."""
    return prepare_video(path, VideoConfig.from_dict(json.loads(settings)))


def check_rows(rows: Iterable[Mapping], tokenizer: Any, video: VideoConfig | None = None) -> None:
    """Refuse rows exported with other video settings than ``video`` (None: any), and rows
    whose text holds an added token of ``tokenizer`` that the export did not escape."""
    extra = set(tokenizer.get_added_vocab()) - set(ADDED_TOKENS)
    for row in rows:
        exported = read_row(row)
        where = f"row {exported.video.row!r}"
        if video is not None and exported.video.config != video:
            given, asked = exported.video.config.to_dict(), video.to_dict()
            differ = sorted(k for k in asked if given[k] != asked[k])
            raise ConfigError(f"{where} was exported with other video settings ({differ} "
                              f"differ: {[given[k] for k in differ]}, asked "
                              f"{[asked[k] for k in differ]}); export it with these settings")
        text = json.dumps(exported.messages, ensure_ascii=False)
        found = sorted(token for token in extra if token in text)
        if found:
            raise ConfigError(f"{where}: its text holds {found}, added tokens of this "
                              "tokenizer that the export does not escape")


def row_inputs(row: Mapping, processor: Any, video: VideoConfig | None = None) -> Any:
    """The processor inputs verl computes for a row's prompt (:func:`prompt_inputs`):
    ``input_ids``, ``attention_mask``, ``mm_token_type_ids``, ``pixel_values_videos``,
    ``video_grid_thw``. ``video``: the settings the caller expects; a row exported with others
    is refused, and so is a row this processor renders to other tokens than the export's."""
    check_rows([row], processor.tokenizer, video)
    messages = row_messages(row)
    inputs = prompt_inputs(processor, messages, message_videos(messages))
    check_rendering(row, inputs["input_ids"][0].tolist())
    return inputs


def check_rendering(row: Mapping, ids: list[int]) -> None:
    """Raise unless ``ids`` are the prompt tokens the export rendered for ``row``."""
    exported = read_row(row)
    if ids_digest(ids) != exported.prompt_digest:
        import transformers

        raise ConfigError(
            f"row {exported.video.row!r}: this processor renders the prompt as {len(ids)} "
            f"tokens, the export as {exported.prompt_tokens} other ones: the tokenizer, the "
            f"chat template or transformers ({transformers.__version__} here) differ from the "
            "export's, so GRPO would train on other prompt tokens than SFT and scoring")


def check_environment(row: Mapping, processor: Any) -> None:
    """:func:`row_inputs` of ``row`` on one thread: the dataset's process must start no OpenMP
    threads before verl forks its workers (a forked child hangs in OpenMP once its parent ran
    a parallel region)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        row_inputs(row, processor)
    finally:
        torch.set_num_threads(threads)


def checkpoint_video(tokenizer: Any) -> VideoConfig | None:
    """The video settings saved with the checkpoint ``tokenizer`` was loaded from
    (``qsave_scorer.json``), or None when it has none."""
    source = getattr(tokenizer, "name_or_path", "")
    saved, _ = checkpoint_settings(str(source)) if source else ({}, None)
    return VideoConfig.from_dict(saved["video"]) if "video" in saved else None


def check_verl_config(config: Mapping) -> None:
    """Raise unless verl's data config passes :data:`PROCESSOR_KWARGS` to its processor calls
    (without them verl resamples and resizes the frames)."""
    given = dict(config.get("mm_processor_kwargs") or {})
    missing = [f"++data.mm_processor_kwargs.{k}={v}" for k, v in PROCESSOR_KWARGS.items()
               if given.get(k) != v]
    if missing:
        raise ConfigError(f"verl would resample and resize qsave's frames: add {missing} "
                          "(written to verl_overrides.txt by the export)")


class QsaveVideoMixin:
    """The overrides of verl's ``RLHFDataset`` (verl ≥ 0.8) for rows of ``export_verl``."""

    def __init__(self, data_files: Any, tokenizer: Any, config: Any, processor: Any = None,
                 **kwargs: Any) -> None:
        check_verl_config(config)
        super().__init__(data_files, tokenizer, config, processor, **kwargs)
        check_rows(self.dataframe, tokenizer, checkpoint_video(tokenizer))
        if len(self.dataframe):  # the rendering is the environment's: one row shows it
            check_environment(self.dataframe[0], processor)

    def _build_messages(self, example: dict, key: str | None = None) -> list[dict]:
        return row_messages(example)

    @classmethod
    def _process_multi_modal_info(cls, messages: list[dict], image_patch_size: int,
                                  config: Any) -> tuple[None, list, None]:
        return None, message_videos(messages), None


def __getattr__(name: str) -> Any:
    """``QsaveVideoDataset``, made on first use: verl's ``RLHFDataset`` with the mixin."""
    if name == DATASET_CLASS:
        return _dataset_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _dataset_class() -> type:
    try:
        from verl.utils.dataset.rl_dataset import RLHFDataset
    except ImportError as error:
        raise ImportError(f"{DATASET_CLASS} is a verl dataset class: it needs verl >= 0.8 "
                          f"installed ({error})") from error
    if not hasattr(RLHFDataset, "_process_multi_modal_info"):
        raise ImportError(f"{DATASET_CLASS} needs verl >= 0.8 (RLHFDataset."
                          "_process_multi_modal_info and data.mm_processor_kwargs)")
    return type(DATASET_CLASS, (QsaveVideoMixin, RLHFDataset),
                {"__module__": __name__, "__doc__": QsaveVideoMixin.__doc__})
