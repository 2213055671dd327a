"""Distributed scoring on Ray Data: ``qsave score --ray`` (DESIGN.md, scale-out scoring).

The inputs become a Ray dataset of (index, path, prompt, id) rows; ``map_batches`` runs them
through a pool of actors, each holding one scorer (the transformers :class:`Evaluator`, or the
vLLM backend) loaded once, ``batch_size`` videos per call. Results stream back to the driver,
which appends each row to the same resumable JSONL as ``qsave score`` (flushed and fsynced
as it arrives): a killed run loses at most the batches in flight, and a rerun skips every row
already written. The resume key is the exact one of ``qsave score`` (content hash, prompt,
model, settings); the actors check it, since only a loaded model knows its own revision, dtype
and device, and they skip a done video before decoding it.

>>> RayConfig(actors=2).remote_args()
{'num_cpus': 1.0}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from qsave.dimensions import Dimension
from qsave.errors import ConfigError, QsaveError

BACKENDS = ("transformers", "vllm")  # what a scoring actor may hold


@dataclass(frozen=True)
class ModelSpec:
    """How every actor loads its scorer (the ``qsave score`` model flags)."""

    model: str = "tiny"  # hub id, checkpoint directory, or "tiny"
    backend: str = "transformers"  # "transformers" (Evaluator) or "vllm"
    revision: str | None = None  # hub revision
    adapter: str | None = None  # LoRA adapter
    device: str | None = None  # default: cuda if any
    dtype: str | None = None  # default: by device
    answer_format: str = "rating-first"  # where the rating is read
    video_mode: str = "slowfast"  # frames: slowfast or uniform
    max_new_tokens: int = 256  # rationale length limit (explain)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")

    def load(self) -> Any:
        """The scorer: an Evaluator, or a VllmScorer (both: score_many, settings, info)."""
        from qsave.video.inputs import VideoConfig

        video = VideoConfig(mode=self.video_mode)
        if self.backend == "vllm":
            from qsave.serve.vllm_backend import VllmScorer

            return VllmScorer.from_pretrained(self.model, revision=self.revision,
                                              dtype=self.dtype, answer_format=self.answer_format,
                                              video_config=video)
        from qsave.evaluator import Evaluator

        return Evaluator.from_pretrained(
            self.model, revision=self.revision, adapter=self.adapter, device=self.device,
            dtype=self.dtype, answer_format=self.answer_format, video_config=video,
            max_new_tokens=self.max_new_tokens)


@dataclass(frozen=True)
class RayConfig:
    """The Ray side of ``qsave score --ray``."""

    actors: int = 1  # scoring actors, each holding one model
    batch_size: int = 8  # videos per actor call (one forward batch)
    cpus_per_actor: float = 1.0  # CPUs reserved per actor
    gpus_per_actor: float = 0.0  # GPUs per actor (1 on a GPU cluster)
    address: str | None = None  # cluster to join ("auto", "ray://…"); None: local
    num_cpus: int | None = None  # CPUs of a local cluster started here (None: all)

    def __post_init__(self) -> None:
        if self.actors < 1 or self.batch_size < 1:
            raise ConfigError(f"actors ({self.actors}) and batch_size ({self.batch_size}) "
                              "must be at least 1")
        if self.cpus_per_actor < 0 or self.gpus_per_actor < 0:
            raise ConfigError("cpus_per_actor and gpus_per_actor must not be negative")

    def remote_args(self) -> dict[str, float]:
        args = {"num_cpus": self.cpus_per_actor}
        if self.gpus_per_actor:
            args["num_gpus"] = self.gpus_per_actor
        return args


class ScoringActor:
    """A Ray Data callable class: loads the scorer once, then scores batches of rows.

    A row in: ``index``, ``item`` (JSON: path, prompt, id). A row out: ``index``, ``record``
    (the JSONL row, JSON; empty when skipped) and ``done_key`` (the resume key of the row
    already in the output; empty when scored now)."""

    def __init__(self, spec: dict, dimensions: list[str], explain: bool,
                 done: frozenset[str]) -> None:
        self.scorer = ModelSpec(**spec).load()
        self.dimensions = tuple(Dimension(d) for d in dimensions)
        self.explain, self.done = explain, done

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from qsave.evaluator import ScoreItem

        items = [ScoreItem(**json.loads(text)) for text in batch["item"]]
        keys = [self._done_key(item) for item in items]
        todo = [item for item, key in zip(items, keys, strict=True) if not key]
        fresh = iter(self.scorer.score_many(todo, dimensions=self.dimensions,
                                            explain=self.explain, batch_size=max(len(todo), 1)))
        records = ["" if key else json.dumps(next(fresh).to_record(), ensure_ascii=False)
                   for key in keys]
        return {"index": np.asarray(batch["index"]), "record": np.asarray(records, dtype=object),
                "done_key": np.asarray(keys, dtype=object)}

    def _done_key(self, item: Any) -> str:
        """The resume key when this video is already in the output, else ''. The key is
        that of the row scoring would write (``VideoResult.key``), so it always matches."""
        from qsave.results import VideoResult, content_hash

        if item.path is None or not os.path.isfile(item.path):
            return ""
        item.content_hash = content_hash(item.path)
        shell = VideoResult(item.name, item.path, item.content_hash, item.prompt,
                            model=self.scorer.info,
                            settings=self.scorer.settings(self.dimensions, self.explain))
        return shell.key if shell.key in self.done else ""


def rows_of(items: Sequence[Any]) -> list[dict[str, Any]]:
    """Dataset rows of ScoreItems with a path: their index and their fields as JSON."""
    rows = []
    for index, item in enumerate(items):
        if item.path is None:
            raise ConfigError(f"item {index} has no path: Ray scoring reads videos from files")
        fields = {"video": item.path, "prompt": item.prompt, "id": item.id}
        rows.append({"index": index, "item": json.dumps(fields, ensure_ascii=False)})
    return rows


def _ray_session(config: RayConfig):
    """(ray module, whether this call started the session)."""
    try:
        import ray
    except ImportError as error:
        raise ConfigError("--ray needs Ray Data: pip install 'qsave[ray]'") from error
    if ray.is_initialized():
        return ray, False
    ray.init(address=config.address, num_cpus=config.num_cpus, include_dashboard=False,
             log_to_driver=False)
    return ray, True


def score_batches(
    items: Sequence[Any], spec: ModelSpec, dimensions: Iterable[str | Dimension] | None,
    explain: bool, config: RayConfig, done: frozenset[str],
) -> Iterator[dict[str, Any]]:
    """Output rows (index, record, done_key) as the actors finish them (any order)."""
    from qsave.evaluator import parse_dimensions

    dims = [d.value for d in parse_dimensions(dimensions)]
    ray, started = _ray_session(config)
    try:
        from ray.data import ActorPoolStrategy

        dataset = ray.data.from_items(rows_of(items)).map_batches(
            ScoringActor, batch_size=config.batch_size, batch_format="numpy",
            compute=ActorPoolStrategy(size=config.actors),
            fn_constructor_kwargs={"spec": asdict(spec), "dimensions": dims,
                                   "explain": explain, "done": done},
            **config.remote_args())
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for index, record, key in zip(batch["index"], batch["record"], batch["done_key"],
                                          strict=True):
                yield {"index": int(index), "record": str(record), "done_key": str(key)}
    finally:
        if started:
            ray.shutdown()


def score_with_ray(
    items: Sequence[Any], out: str | os.PathLike, spec: ModelSpec = ModelSpec(), *,
    dimensions: Iterable[str | Dimension] | None = None, explain: bool = False,
    config: RayConfig = RayConfig(),
) -> Any:
    """Score ``items`` (ScoreItems with paths) on Ray and append the rows to ``out``; the
    ``FileRun`` of ``qsave score`` (rows written now, rows already there, failures)."""
    from qsave.evaluator import FileRun
    from qsave.results import JsonlWriter, done_keys

    old = done_keys(out)
    records: dict[int, dict[str, Any]] = {}
    written = 0
    with JsonlWriter(out) as writer:
        for row in score_batches(items, spec, dimensions, explain, config, frozenset(old)):
            if row["done_key"]:
                records[row["index"]] = old[row["done_key"]]
                continue
            record = json.loads(row["record"])
            writer.write(record)
            written += 1
            records[row["index"]] = record
    if len(records) != len(items):
        raise QsaveError(f"Ray returned {len(records)} rows for {len(items)} inputs")
    ordered = [records[i] for i in range(len(items))]
    failed = [r["id"] for r in ordered if r.get("error")]
    return FileRun(written, len(items) - written, failed, ordered)


def score_scaled(
    items: Sequence[Any], out: str | os.PathLike, spec: ModelSpec, *,
    dimensions: Iterable[str | Dimension] | None = None, explain: bool = False,
    batch_size: int = 8, ray: RayConfig | None = None,
) -> Any:
    """``qsave score`` with ``--ray`` and/or ``--backend vllm``: on Ray when ``ray`` is given,
    else in this process with the chosen backend; the ``FileRun`` of ``qsave score``."""
    if ray is not None:
        return score_with_ray(items, out, spec, dimensions=dimensions, explain=explain,
                              config=ray)
    from qsave.evaluator import score_to_jsonl

    return score_to_jsonl(spec.load(), items, out, dimensions=dimensions, explain=explain,
                          batch_size=batch_size)
