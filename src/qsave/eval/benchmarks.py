"""Ground truth and predictions in one common form; benchmark adapters (paper App. D.2).

Every adapter reads a published annotation file from a local path (nothing is downloaded) and
returns a :class:`Truth`: the videos (id, path, prompt, generator), pointwise MOS per dimension
on the 1–5 scale, and/or preference pairs with dimension labels. Dimension names are
``visual``, ``dynamic``, ``alignment`` and ``overall``; how each benchmark maps onto them, and
how its scale is rescaled, follows App. D.2:

========================  =====================================================  ============
name                      published format → our dimensions                      scale
========================  =====================================================  ============
``qsave``                 CSV/JSONL/parquet, layout read from the columns        MOS 1–5;
                          (:data:`TRUTH_LAYOUTS`): the ``qsave data mos`` table  pairs
                          or a videos table / manifest with MOS per dimension;
                          pairs built from MOS within each prompt at evaluation
``videogen-rewardbench``  CSV: path_A, path_B, A_model, B_model, prompt, VQ, MQ,  pairs
                          TA, Overall ∈ {A, B, same}; VQ→visual, MQ→dynamic,
                          TA→alignment, Overall→overall
``t2vqa-db``              ``filename|prompt|score`` lines (or CSV with those     1–100 → 1–5;
                          columns); one score → overall; pairs built from MOS    pairs
``genai-bench``           parquet/JSONL/CSV of the video_generation subset:      pairs
                          prompt, left_model, left_video, right_model,
                          right_video, vote_type; → overall
``videophy2-test``        CSV: video_url, caption, sa, pc[, model_name];         integer 1–5
                          SA→alignment, PC→dynamic; "Avg" = mean of the two
                          PLCC (:class:`Average`, Table 10)
``videoscore-bench-v2``   JSON/JSONL: video_name, prompt, visual_score,          integer 1–5
                          t2v_score, phy_score[, model]; visual→visual,
                          t2v→alignment, phy→dynamic
========================  =====================================================  ============

A malformed row never stops the load: it is recorded in ``Truth.problems`` and skipped.
"Overall" predictions for pairs or MOS are the mean of the available dimension scores (App. D.2;
computed in :mod:`qsave.eval.report`).

>>> sorted(BENCHMARKS)  # doctest: +NORMALIZE_WHITESPACE
['genai-bench', 'qsave', 't2vqa-db', 'videogen-rewardbench', 'videophy2-test',
 'videoscore-bench-v2']
"""

from __future__ import annotations

import csv
import inspect
import itertools
import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from qsave.dimensions import DIMENSIONS, MOS_MAX, MOS_MIN
from qsave.errors import AnnotationError, ConfigError, DuplicateIdError
from qsave.eval.kinds import row_kinds
from qsave.jsonl import read_jsonl
from qsave.registry import Registry
from qsave.scores import VideoResult, read_results

OVERALL = "overall"
DIMENSION_NAMES: tuple[str, ...] = (*(d.value for d in DIMENSIONS), OVERALL)


@dataclass(frozen=True)
class Video:
    """One video of a benchmark; ``id`` is what predictions are matched against."""

    id: str
    path: str | None = None
    prompt: str | None = None
    generator: str | None = None


@dataclass(frozen=True)
class Pair:
    """A human preference between two videos on one dimension: +1 A, -1 B, 0 tie."""

    a: str
    b: str
    dimension: str
    label: int


@dataclass(frozen=True)
class Scale:
    """The benchmark's native score range and whether its levels are integers."""

    low: float = MOS_MIN
    high: float = MOS_MAX
    integer: bool = False


@dataclass(frozen=True)
class Average:
    """A figure a benchmark reports as the mean of one instance-level metric over dimensions,
    e.g. VideoPhy2-test's "Avg" PLCC of semantic and physical (App. D.3.2, Table 10)."""

    name: str  # as the paper labels it
    metric: str  # a key of the instance-level correlation entry: srcc, plcc, krcc, rmse
    dimensions: tuple[str, ...]  # averaged, each weighing once
    source: str  # where the paper defines it


@dataclass
class Truth:
    """A benchmark in the common in-memory form; MOS values are on the 1–5 scale."""

    name: str
    videos: dict[str, Video] = field(default_factory=dict)
    mos: dict[str, dict[str, float]] = field(default_factory=dict)  # dimension → id → MOS 1–5
    pairs: list[Pair] = field(default_factory=list)
    scale: Scale = field(default_factory=Scale)
    problems: list[str] = field(default_factory=list)  # rows skipped, with the reason
    notes: list[str] = field(default_factory=list)  # protocol choices worth reporting
    excluded: list[Video] = field(default_factory=list)  # videos left out on purpose (--split)
    averages: list[Average] = field(default_factory=list)  # dimension averages it reports
    mos_pairs: bool = False  # without pairs, evaluation builds them from MOS (derive_mos_pairs)
    # dimension → id → defect kinds ("clean": none), from a synth manifest's defects (kinds.py)
    defect_kinds: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)

    def add_video(self, video: Video) -> None:
        """Register a video; the first occurrence of an id wins (pairs repeat videos)."""
        self.videos.setdefault(video.id, video)

    def set_mos(self, dimension: str, video_id: str, value: float) -> None:
        """Store one MOS, already on the 1–5 scale."""
        self.mos.setdefault(dimension, {})[video_id] = value


Adapter = Callable[..., Truth]
BENCHMARKS: Registry[Adapter] = Registry("benchmark")  # adapters ``path → Truth``
register_benchmark = BENCHMARKS.register


def load_truth(path: str | Path, benchmark: str | None = None, **options: Any) -> Truth:
    """Read ground truth with the named adapter (default ``qsave``); unknown names list all."""
    name = benchmark or "qsave"
    adapter = BENCHMARKS.lookup(name)
    accepted = list(inspect.signature(adapter).parameters)[1:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"benchmark {name!r} takes no option {', '.join(unknown)}; "
            f"its options: {', '.join(accepted) or 'none'}"
        )
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"ground-truth file not found: {path}")
    return adapter(path, **options)


# --- reading tables -----------------------------------------------------------------------------
def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """``(row number, row)`` of a CSV, JSON list, JSONL or parquet file; a bad line is a string."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from enumerate(_parquet_rows(path), start=1)
    elif suffix == ".json":
        yield from enumerate(_json_rows(path), start=1)
    elif suffix == ".jsonl":
        yield from _jsonl_rows(path)
    else:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # tolerate a BOM
            yield from enumerate(csv.DictReader(handle), start=2)  # line 1 is the header


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """JSONL rows (:func:`qsave.jsonl.read_jsonl`); a line that is not a row is yielded as its
    error message."""
    read = read_jsonl(path)
    yield from sorted([*read.rows, *read.issues()], key=lambda line: line[0])


def _json_rows(path: Path) -> list[dict[str, Any]]:
    """A JSON file holding a list of objects."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise AnnotationError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of objects")
    return data


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a parquet file (needs pyarrow, the ``report`` extra)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as error:  # pragma: no cover - pyarrow is in the report extra
        raise ConfigError("reading parquet needs pyarrow: pip install 'qsave[report]'") from error
    return pq.read_table(path).to_pylist()


def _number(row: dict[str, Any], key: str) -> float:
    """A finite float from ``row[key]``; raises ``AnnotationError`` naming the column."""
    value = row.get(key)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AnnotationError(f"column {key!r} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise AnnotationError(f"column {key!r} is not finite: {value!r}")
    return number


def _optional(row: dict[str, Any], *keys: str) -> str | None:
    """The first non-empty text among ``keys``, or ``None``."""
    for key in keys:
        value = row.get(key)
        if value is not None and str(value).strip() and str(value).lower() != "nan":
            return str(value).strip()
    return None


def _required(row: dict[str, Any], *keys: str) -> str:
    """The first non-empty text among ``keys``; raises ``AnnotationError`` naming them."""
    value = _optional(row, *keys)
    if value is None:
        raise AnnotationError(f"missing column {' or '.join(repr(k) for k in keys)}")
    return value


def _rescale(value: float, scale: Scale) -> float:
    """A native score mapped linearly onto MOS 1–5; outside the native range is an error."""
    if not scale.low - 1e-9 <= value <= scale.high + 1e-9:
        raise AnnotationError(f"score {value} is outside the scale [{scale.low}, {scale.high}]")
    return MOS_MIN + (MOS_MAX - MOS_MIN) * (value - scale.low) / (scale.high - scale.low)


def _scores(row: dict[str, Any], columns: dict[str, str], scale: Scale) -> dict[str, float]:
    """Column → dimension scores of one row, each rescaled onto MOS 1–5; all or nothing."""
    return {dim: _rescale(_number(row, column), scale) for column, dim in columns.items()}


def _each_row(truth: Truth, path: Path, rows: Iterable[tuple[int, Any]], parse: Callable) -> None:
    """Apply ``parse(truth, row)`` to each row; a failing row becomes a problem, not a crash."""
    for number, row in rows:
        if isinstance(row, str):
            truth.problems.append(f"{path.name} row {number}: {row}")
            continue
        try:
            parse(truth, row)
        except AnnotationError as error:
            truth.problems.append(f"{path.name} row {number}: {error}")


# --- qsave: the tables qsave writes -------------------------------------------------------------
ID_COLUMNS = ("id", "video_id", "video")
TRUTH_LAYOUTS = {  # what the qsave adapter reads, told apart by the columns (docs/eval.md)
    "MOS table": "video_id, dimension, mos: what `qsave data mos` writes (its mos5, the MOS "
                 "on 1–5, is used when present); optional prompt, generator, path",
    "videos table": "id or video_id, and each dimension's MOS on 1–5 as a column visual, "
                    "dynamic, alignment, overall, or mos_<dimension> (`qsave data split`), or "
                    "in a mos object (manifest.jsonl of `qsave data synth`); optional prompt, "
                    "generator, path, split, defects",
}


def truth_columns(rows: Iterable[tuple[int, Any]]) -> list[str]:
    """The columns of a table's rows, in order of first appearance; the keys of a ``mos``
    object as ``mos.<key>``."""
    seen: dict[str, None] = {}
    for _, row in rows:
        if isinstance(row, dict):
            seen.update(dict.fromkeys(map(str, row)))
            if isinstance(row.get("mos"), dict):
                seen.update(dict.fromkeys(f"mos.{key}" for key in row["mos"]))
    return list(seen)


def truth_layout(columns: Iterable[str]) -> str | None:
    """The :data:`TRUTH_LAYOUTS` name a table's columns fit, or ``None``.

    >>> truth_layout(["video_id", "dimension", "mos", "std", "n_raters", "mos5"])
    'MOS table'
    >>> truth_layout(["video_id", "prompt", "mos_visual", "split"]), truth_layout(["id", "mos"])
    ('videos table', None)
    """
    columns = set(columns)
    if not columns & set(ID_COLUMNS):
        return None
    if "dimension" in columns and columns & {"mos", "mos5"}:
        return "MOS table"
    wide = {f"{prefix}{name}" for prefix in ("", "mos_", "mos.") for name in DIMENSION_NAMES}
    return "videos table" if columns & wide else None


def layout_error(path: Path, columns: list[str]) -> str:
    """Why a file is no qsave truth: the columns found and those of each accepted layout."""
    expected = "; ".join(f"({k}) {name}: {text}"
                         for k, (name, text) in enumerate(TRUTH_LAYOUTS.items(), start=1))
    hint = (" It looks like a ratings table: `qsave data mos --ratings FILE -o mos.csv` "
            "makes the MOS table." if "rater_id" in columns else "")
    return (f"{path.name} matches no truth layout of the qsave benchmark; columns found: "
            f"{', '.join(columns) or 'none'}. Expected {expected}.{hint} A published "
            "benchmark's file needs --benchmark NAME (docs/eval.md)")


@register_benchmark("qsave")
def load_qsave(path: Path, split: str | None = None) -> Truth:
    """The truth tables qsave writes, MOS on 1–5 (Sec. 3.3–3.4), in either of
    :data:`TRUTH_LAYOUTS`, told apart by the columns (never the suffix). Without pairs of its
    own, evaluation builds them from the MOS (:func:`derive_mos_pairs`).

    ``split`` keeps only the rows whose ``split`` column equals it (e.g. ``test``). A videos
    table's ``defects`` (a synth manifest's labelled defects, or that object as JSON text in
    the tables of ``qsave data split``) gives each video's defect kinds per dimension,
    ``Truth.defect_kinds`` (:func:`qsave.eval.kinds.row_kinds`), and the report figures per kind.
    """
    rows = list(read_rows(path))
    columns = truth_columns(rows)
    if not columns:
        bad = [row for _, row in rows if isinstance(row, str)]
        raise AnnotationError(f"{path.name} has no rows" + (f" it can read: {bad[0]}" if bad
                                                              else ""))
    layout = truth_layout(columns)
    if layout is None:
        raise AnnotationError(layout_error(path, columns))
    truth = Truth(name="qsave" if split is None else f"qsave ({split})", mos_pairs=True)
    truth.notes.append(f"truth layout: {layout}")
    if split is not None:
        if "split" not in columns:
            raise AnnotationError(f"--split {split}: {path.name} has no split column; columns "
                                  f"found: {', '.join(columns)}")
        other = {str(_optional(r, *ID_COLUMNS)): r for _, r in rows
                 if isinstance(r, dict) and r.get("split") != split}  # a video once (MOS table)
        rows = [(n, r) for n, r in rows if not isinstance(r, dict) or r.get("split") == split]
        truth.excluded = [Video(video_id, _optional(r, "path")) for video_id, r in other.items()]
        truth.notes.append(f"only the {split!r} split ({len(other)} other videos left out)")
    parse = _parse_mos_row if layout == "MOS table" else _parse_qsave_row
    _each_row(truth, path, rows, parse)
    if not truth.videos and truth.problems:
        raise AnnotationError(f"{path.name} ({layout}): none of its rows is usable, e.g. "
                              + "; ".join(truth.problems[:3]))
    return truth


def _add_qsave_video(truth: Truth, video_id: str, row: dict[str, Any]) -> None:
    """The video of a qsave truth row, with its optional path, prompt and generator."""
    truth.add_video(Video(video_id, path=_optional(row, "path"), prompt=_optional(row, "prompt"),
                          generator=_optional(row, "generator", "model")))


def _parse_qsave_row(truth: Truth, row: dict[str, Any]) -> None:
    """One videos-table row: id and MOS per dimension (flat, ``mos_<dimension>`` or ``mos``)."""
    video_id = _required(row, *ID_COLUMNS)
    nested = row["mos"] if isinstance(row.get("mos"), dict) else {}
    values = {}
    for name in DIMENSION_NAMES:
        for source, key in ((nested, name), (row, name), (row, f"mos_{name}")):
            if _optional(source, key) is not None:
                values[name] = _rescale(_number(source, key), truth.scale)
                break
    if not values:
        raise AnnotationError(f"video {video_id!r} has no MOS for {', '.join(DIMENSION_NAMES)}")
    defects = _optional(row, "defects")  # a synth manifest's labelled defects, if any
    kinds = row_kinds(row["defects"]) if defects is not None else {}
    _add_qsave_video(truth, video_id, row)
    for name, value in values.items():
        truth.set_mos(name, video_id, value)
    for name, names in kinds.items():
        truth.defect_kinds.setdefault(name, {})[video_id] = names


def _parse_mos_row(truth: Truth, row: dict[str, Any]) -> None:
    """One MOS-table row: a video's MOS of one dimension (``mos5`` when present, else ``mos``)."""
    video_id = _required(row, *ID_COLUMNS)
    dimension = _required(row, "dimension").lower()
    if dimension not in DIMENSION_NAMES:
        raise AnnotationError(f"unknown dimension {dimension!r}; expected one of "
                              f"{', '.join(DIMENSION_NAMES)}")
    value = _rescale(_number(row, "mos5" if _optional(row, "mos5") else "mos"), truth.scale)
    if video_id in truth.mos.get(dimension, {}):
        raise AnnotationError(f"a second {dimension} MOS for video {video_id!r}")
    _add_qsave_video(truth, video_id, row)
    truth.set_mos(dimension, video_id, value)


# --- VideoGen-RewardBench -----------------------------------------------------------------------
VIDEOGEN_COLUMNS = {"VQ": "visual", "MQ": "dynamic", "TA": "alignment", "Overall": OVERALL}
VIDEOGEN_LABELS = {"A": 1, "B": -1, "same": 0}


@register_benchmark("videogen-rewardbench")
def load_videogen_rewardbench(path: Path) -> Truth:
    """``videogen-rewardbench.csv`` (KwaiVGI/VideoGen-RewardBench): pairs on VQ, MQ, TA, Overall."""
    truth = Truth(name="videogen-rewardbench", scale=Scale(-1, 1, integer=True))
    truth.notes.append("VQ→visual, MQ→dynamic, TA→alignment, Overall→mean of dimensions (D.2)")
    _each_row(truth, path, read_rows(path), _parse_videogen_row)
    return truth


def _parse_videogen_row(truth: Truth, row: dict[str, Any]) -> None:
    """One pair row; a dimension column that is empty is skipped for that pair."""
    prompt = _optional(row, "prompt")
    a, b = _required(row, "path_A"), _required(row, "path_B")
    labels = {}
    for column, dimension in VIDEOGEN_COLUMNS.items():
        value = _optional(row, column)
        if value is None:
            continue
        if value not in VIDEOGEN_LABELS:
            raise AnnotationError(f"column {column!r} must be A, B or same, got {value!r}")
        labels[dimension] = VIDEOGEN_LABELS[value]
    if not labels:
        raise AnnotationError(f"pair {a} / {b} has no label in {', '.join(VIDEOGEN_COLUMNS)}")
    truth.add_video(Video(a, a, prompt, _optional(row, "A_model")))
    truth.add_video(Video(b, b, prompt, _optional(row, "B_model")))
    truth.pairs.extend(Pair(a, b, dim, label) for dim, label in labels.items())


# --- T2VQA-DB -----------------------------------------------------------------------------------
T2VQA_SCALE = Scale(1, 100)  # "each labeled with a single quality score in the range [1, 100]"


@register_benchmark("t2vqa-db")
def load_t2vqa_db(
    path: Path, n_videos: int | None = None, seed: int = 0, tie_margin: float = 0.0
) -> Truth:
    """T2VQA-DB's ``filename|prompt|score`` annotation; MOS 1–100 → 1–5, pairs from MOS (D.2).

    The paper samples 2,000 videos and builds 1,822 pairs "by comparing human-annotated scores"
    without saying how; we pair videos of the same prompt (see :func:`pairs_from_mos`).
    """
    truth = Truth(name="t2vqa-db", scale=T2VQA_SCALE)
    rows = _t2vqa_rows(path) if path.suffix.lower() == ".txt" else read_rows(path)
    _each_row(truth, path, rows, _parse_t2vqa_row)
    overall = truth.mos.get(OVERALL, {})
    truth.pairs = pairs_from_mos(truth, overall, n_videos, seed, tie_margin)
    truth.notes.append(
        f"{len(truth.pairs)} pairs built from MOS within each prompt (seed {seed}, "
        f"videos sampled: {n_videos or 'all'}, human tie when |ΔMOS| ≤ {tie_margin} on 1–5)"
    )
    return truth


def _t2vqa_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """The ``filename|prompt|score`` text format of the T2VQA repository's data loader."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("|")
            if len(parts) != 3:
                yield number, f"expected filename|prompt|score, got {len(parts)} fields"
                continue
            yield number, dict(zip(("filename", "prompt", "score"), parts, strict=True))


def _parse_t2vqa_row(truth: Truth, row: dict[str, Any]) -> None:
    """One T2VQA-DB video with its single quality score."""
    name = _required(row, "filename", "video", "id")
    value = _rescale(_number(row, "score" if "score" in row else "mos"), truth.scale)
    truth.add_video(
        Video(name, name, _optional(row, "prompt"), _optional(row, "generator", "model"))
    )
    truth.set_mos(OVERALL, name, value)


def pairs_from_mos(
    truth: Truth,
    mos: dict[str, float],
    n_videos: int | None = None,
    seed: int = 0,
    tie_margin: float = 0.0,
    dimension: str = OVERALL,
) -> list[Pair]:
    """Preference pairs of ``dimension`` from its pointwise MOS: a chain of neighbours within
    each prompt (:data:`MOS_PAIR_RULE`).

    Videos (optionally a seeded sample of ``n_videos``) are grouped by prompt and each is paired
    with the next one of its group in id order, so ``k`` videos of a prompt give ``k - 1``
    pairs; a video without a prompt is in no pair. The label is the sign of
    ``MOS_A - MOS_B``, a tie when ``|Δ| ≤ tie_margin``.

    >>> t = Truth("x", videos={i: Video(i, prompt="p") for i in "abc"})
    >>> [p.label for p in pairs_from_mos(t, {"a": 1.0, "b": 3.0, "c": 3.0})]
    [-1, 0]
    """
    ids = sorted(mos)
    rng = random.Random(seed)
    if n_videos is not None and n_videos < len(ids):
        ids = sorted(rng.sample(ids, n_videos))
    groups: dict[str, list[str]] = defaultdict(list)
    for video_id in ids:
        prompt = truth.videos[video_id].prompt if video_id in truth.videos else None
        if prompt:
            groups[prompt].append(video_id)
    pairs = []
    for key in sorted(groups):
        for a, b in itertools.pairwise(groups[key]):
            delta = mos[a] - mos[b]
            label = 0 if abs(delta) <= tie_margin else (1 if delta > 0 else -1)
            pairs.append(Pair(a, b, dimension, label))
    return pairs


MOS_PAIR_RULE = ("per dimension, each video paired with the next of its prompt in id order "
                 "(k videos: k − 1 pairs); label sign(MOS_A − MOS_B), a human tie when "
                 "|MOS_A − MOS_B| ≤ m")


def derive_mos_pairs(
    truth: Truth, prompts: dict[str, str], tie_margin: float
) -> tuple[Truth, dict[str, Any]]:
    """A copy of ``truth`` with preference pairs built from its MOS on every dimension
    (:func:`pairs_from_mos`, tie margin ``m`` on MOS 1–5), and what a report says of them.

    A video's prompt is the truth's own, else ``prompts[id]`` (its prediction row's prompt).
    When no pair can be built, ``reason`` says why.

    >>> t = Truth("x", videos={i: Video(i) for i in "abc"}, mos={"visual": dict(a=1, b=2, c=4)})
    >>> out, about = derive_mos_pairs(t, {"a": "p", "b": "p", "c": "q"}, 0.2)
    >>> out.pairs, about["prompts_from_predictions"], about["reason"]
    ([Pair(a='a', b='b', dimension='visual', label=-1)], 3, None)
    """
    videos = {i: v if v.prompt or i not in prompts else replace(v, prompt=prompts[i])
              for i, v in truth.videos.items()}
    out = replace(truth, videos=videos)
    out.pairs = [pair for dim in DIMENSION_NAMES if dim in truth.mos for pair in
                 pairs_from_mos(out, truth.mos[dim], tie_margin=tie_margin, dimension=dim)]
    groups = Counter(v.prompt for v in videos.values() if v.prompt)
    own = sum(bool(v.prompt) for v in truth.videos.values())
    reason = None
    if not groups:
        reason = ("no video has a prompt: the truth file has no prompt column and the "
                  "prediction rows none (score from a manifest with prompts, or give a truth "
                  "table with a prompt column)")
    elif not out.pairs:
        reason = (f"each of the {len(groups)} prompts has a single video, and pairs are only "
                  "built within a prompt")
    about = {
        "rule": MOS_PAIR_RULE,
        "tie_margin": tie_margin,
        "scale": "MOS (1–5)",
        "pairs": dict(Counter(p.dimension for p in out.pairs)),
        "human_ties": dict(Counter(p.dimension for p in out.pairs if p.label == 0)),
        "prompts": len(groups),
        "prompts_with_pairs": sum(n > 1 for n in groups.values()),
        "prompts_from_truth": own,
        "prompts_from_predictions": sum(groups.values()) - own,
        "videos_without_prompt": len(videos) - sum(groups.values()),
        "reason": reason,
    }
    return out, about


# --- GenAI-Bench (video generation) -------------------------------------------------------------
GENAI_VOTES = {"leftvote": 1, "rightvote": -1, "tievote": 0, "bothbad_vote": 0}


@register_benchmark("genai-bench")
def load_genai_bench(path: Path) -> Truth:
    """TIGER-Lab/GenAI-Bench ``video_generation`` votes: left/right/tie/both-bad → overall pairs."""
    truth = Truth(name="genai-bench", scale=Scale(-1, 1, integer=True))
    truth.notes.append("tievote and bothbad_vote are both human ties; overall = mean of dimensions")
    _each_row(truth, path, read_rows(path), _parse_genai_row)
    return truth


def _parse_genai_row(truth: Truth, row: dict[str, Any]) -> None:
    """One arena vote between two generated videos of a prompt."""
    vote = _required(row, "vote_type")
    if vote not in GENAI_VOTES:
        raise AnnotationError(f"vote_type must be one of {', '.join(GENAI_VOTES)}, got {vote!r}")
    prompt = _optional(row, "prompt")
    a, b = _required(row, "left_video"), _required(row, "right_video")
    truth.add_video(Video(a, a, prompt, _optional(row, "left_model")))
    truth.add_video(Video(b, b, prompt, _optional(row, "right_model")))
    truth.pairs.append(Pair(a, b, OVERALL, GENAI_VOTES[vote]))


# --- VideoPhy2-test -----------------------------------------------------------------------------
VIDEOPHY2_COLUMNS = {"sa": "alignment", "pc": "dynamic"}  # semantic adherence, physical commonsense
VIDEOPHY2_AVERAGE = Average("Avg", "plcc", ("alignment", "dynamic"),
                            "App. D.3.2, Table 10: mean of the semantic and physical PLCC")


@register_benchmark("videophy2-test")
def load_videophy2_test(path: Path) -> Truth:
    """videophysics/videophy2_test: SA → alignment, PC → dynamic, integer 1–5, no rescaling;
    its "Avg" is the mean of the two PLCC (Table 10)."""
    truth = Truth(name="videophy2-test", scale=Scale(1, 5, integer=True),
                  averages=[VIDEOPHY2_AVERAGE])
    truth.notes.append("SA→alignment, PC→dynamic; no visual dimension (D.2)")
    _each_row(truth, path, read_rows(path), _parse_videophy2_row)
    return truth


def _parse_videophy2_row(truth: Truth, row: dict[str, Any]) -> None:
    """One rated video; both columns must parse before anything is stored."""
    url = _required(row, "video_url", "video", "id")
    values = _scores(row, VIDEOPHY2_COLUMNS, truth.scale)
    prompt = _optional(row, "caption", "prompt")
    truth.add_video(Video(url, url, prompt, _optional(row, "model_name", "model")))
    for dim, value in values.items():
        truth.set_mos(dim, url, value)


# --- VideoScore-Bench-v2 ------------------------------------------------------------------------
VIDEOSCORE2_COLUMNS = {"visual_score": "visual", "t2v_score": "alignment", "phy_score": "dynamic"}


@register_benchmark("videoscore-bench-v2")
def load_videoscore_bench_v2(path: Path) -> Truth:
    """VideoScore-Bench-v2 (500 VideoFeedback2 videos): visual, t2v alignment, physical (D.2)."""
    truth = Truth(name="videoscore-bench-v2", scale=Scale(1, 5, integer=True))
    truth.notes.append("visual→visual, t2v→alignment, physical/common-sense→dynamic (D.2)")
    _each_row(truth, path, read_rows(path), _parse_videoscore2_row)
    return truth


def _parse_videoscore2_row(truth: Truth, row: dict[str, Any]) -> None:
    """One video with its three integer scores."""
    name = _required(row, "video_name", "id")
    values = _scores(row, VIDEOSCORE2_COLUMNS, truth.scale)
    path = _optional(row, "video_path", "video_url")
    generator = _optional(row, "model", "model_name")
    truth.add_video(Video(name, path, _optional(row, "prompt"), generator))
    for dim, value in values.items():
        truth.set_mos(dim, name, value)


# --- predictions --------------------------------------------------------------------------------
@dataclass
class Predictions:
    """Scores read from ``qsave score`` output: id → dimension → r̂ (0..1), and the rating
    probabilities behind each r̂ (id → dimension → p_j over :data:`~qsave.dimensions.RATINGS`,
    ascending), when the rows hold them."""

    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    probs: dict[str, dict[str, tuple[float, ...]]] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)  # id → the row's prompt, if any
    errors: dict[str, str] = field(default_factory=dict)  # id → message of a failed prediction
    problems: list[str] = field(default_factory=list)  # unreadable lines, conflicts
    notes: list[str] = field(default_factory=list)
    lines: int = 0
    retried: int = 0  # ids whose error line was followed by a later line (a resumed run)
    models: set[str] = field(default_factory=set)  # distinct model + settings of the lines


def load_predictions(path: str | Path) -> Predictions:
    """Read the JSONL written by ``qsave score`` (through :func:`qsave.scores.read_results`);
    a row with ``error`` set counts as missing.

    A resumed run may leave an error row before the row that replaced it: that is a retry
    (counted). Two scored rows for one id, or an error after a scored row, is ambiguous and
    raises :class:`DuplicateIdError` naming the ids. Lines that are not rows, and rows from more
    than one model or settings, are problems.
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"prediction file not found: {path}")
    read = read_results(path)
    predictions = Predictions(lines=len(read.rows) + len(read.invalid),
                              problems=read.problems(path.name))
    by_id: dict[str, list[tuple[int, VideoResult]]] = defaultdict(list)
    for number, result in read.rows:
        by_id[result.id].append((number, result))
    clashes = [f"{video_id!r} (lines {', '.join(str(n) for n, _ in rows)})"
               for video_id, rows in by_id.items()
               if sum(r.ok for _, r in rows) > 1 or (not rows[-1][1].ok and any(
                   r.ok for _, r in rows))]
    if clashes:
        raise DuplicateIdError(f"{path.name}: {len(clashes)} id(s) have more than one scored "
                               f"row, so their score is ambiguous: {', '.join(clashes[:10])}"
                               + (" …" if len(clashes) > 10 else ""))
    for rows in by_id.values():
        predictions.retried += len(rows) > 1
        _add_prediction(predictions, rows[-1][1])
    if len(predictions.models) > 1:
        predictions.problems.append(
            f"{path.name} mixes {len(predictions.models)} different model/settings combinations"
        )
    if predictions.retried:
        predictions.notes.append(f"{predictions.retried} ids retried after an error line")
    return predictions


def _add_prediction(predictions: Predictions, result: VideoResult) -> None:
    """One video's row: its id, path, and the score r̂ of each dimension, or its error."""
    if result.path:
        predictions.paths[result.id] = result.path
    if result.prompt:
        predictions.prompts[result.id] = result.prompt
    if result.model is not None or result.settings:
        predictions.models.add(json.dumps([result.model, result.settings], sort_keys=True))
    if result.error is not None:
        predictions.errors[result.id] = str(result.error)
    else:
        predictions.scores[result.id] = {d.value: s.score for d, s in result.scores.items()}
        predictions.probs[result.id] = {d.value: s.probs for d, s in result.scores.items()}


# --- matching predictions to truth --------------------------------------------------------------
def match_keys(video_id: str, path: str | None = None) -> list[str]:
    """Keys a video may be matched by, most specific first: id, path, the last two path
    components, file name, stem (a URL's query is ignored).

    >>> match_keys("videos/kling/001.mp4")
    ['videos/kling/001.mp4', 'kling/001.mp4', '001.mp4', '001']
    """
    keys = [video_id]
    for text in (video_id, path):
        if text:
            parts = PurePosixPath(text.split("?")[0].replace("\\", "/")).parts
            name = parts[-1] if parts else text
            keys += [text, "/".join(parts[-2:]), name, name.rsplit(".", 1)[0]]
    return list(dict.fromkeys(k for k in keys if k))


def match_predictions(truth: Truth, predictions: Predictions) -> dict[str, str]:
    """Map each truth video id to a prediction id, by the first key of :func:`match_keys` that
    is unique on both sides (a key shared by two videos or two predictions is ambiguous).

    Raises ``AnnotationError`` when no prediction matches any video at all.
    """
    index: dict[str, set[str]] = defaultdict(set)
    for pred_id in (*predictions.scores, *predictions.errors):
        for key in match_keys(pred_id, predictions.paths.get(pred_id)):
            index[key].add(pred_id)
    truth_keys = {v.id: match_keys(v.id, v.path) for v in truth.videos.values()}
    owners = Counter(key for keys in truth_keys.values() for key in keys)
    matched = {}
    for video_id, keys in truth_keys.items():
        for key in keys:
            if owners[key] == 1 and len(index.get(key, ())) == 1:
                matched[video_id] = next(iter(index[key]))
                break
    if truth.videos and (predictions.scores or predictions.errors) and not matched:
        raise AnnotationError(
            f"no prediction id matches any of the {len(truth.videos)} {truth.name} videos: "
            + id_examples(truth, predictions)
        )
    return matched


MATCH_RULE = (
    "a truth video matches the prediction sharing its first key, unique on both sides, among "
    "the id, the path, the path's last two parts, the file name and its stem; `qsave score` "
    "ids are a manifest line's id (else its path without suffix) or, for a folder, each "
    "video's path relative to that folder without suffix"
)


def id_examples(
    truth: Truth,
    predictions: Predictions,
    truth_ids: Iterable[str] | None = None,
    pred_ids: Iterable[str] | None = None,
    shown: int = 3,
) -> str:
    """What an id error shows: a few ids of each side (default: all), their paths, and
    :data:`MATCH_RULE`."""

    def sample(ids: Iterable[str], paths: dict[str, str | None]) -> str:
        ids = list(ids)
        text = ", ".join(i if not paths.get(i) or paths[i] == i else f"{i} (path {paths[i]})"
                         for i in ids[:shown])
        return text + (f" … ({len(ids)} in all)" if len(ids) > shown else "") or "none"

    truth_paths = {v.id: v.path for v in truth.videos.values()}
    pred_all = [*predictions.scores, *predictions.errors]
    return (f"truth ids e.g. {sample(truth_ids or truth.videos, truth_paths)}; prediction ids "
            f"e.g. {sample(pred_ids or pred_all, predictions.paths)}; {MATCH_RULE}")
