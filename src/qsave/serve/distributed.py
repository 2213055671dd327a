"""Distributed scoring on Ray Data: ``qsave score --ray`` (DESIGN.md, scale-out scoring).

The inputs become a Ray dataset of (index, path, prompt, id) rows; ``map_batches`` runs them
through a pool of actors, each holding one :class:`~qsave.evaluator.Evaluator` (the scoring
pipeline, on the spec's backend) loaded once, ``batch_size`` videos per call. Results stream
back to the driver, which writes them through :class:`qsave.results.ResultsOutput` exactly as
``qsave score`` does: a killed run loses at most the batches in flight, a rerun repairs the file
and skips every row already written. The resume key is the one of ``qsave score``; the actors
check it, since only a loaded model knows its own revision, dtype and device, and they skip a
done video before decoding it.

>>> RayConfig(actors=2).remote_args()
{'num_cpus': 1.0}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from qsave.dimensions import Dimension
from qsave.errors import ConfigError, QsaveError
from qsave.jsonl import dumps
from qsave.results import FileRun, ResultsOutput
from qsave.scores import VideoResult
from qsave.sources import check_unique_ids
from qsave.spec import ScorerSpec


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
    """A Ray Data callable class: loads the evaluator once, then scores batches of rows.

    A row in: ``index``, ``item`` (JSON: path, prompt, id). A row out: ``index``, ``record``
    (the JSONL row, JSON; empty when skipped) and ``done_key`` (the resume key of the row
    already in the output; empty when scored now)."""

    def __init__(self, spec: dict, dimensions: list[str], explain: bool,
                 done: frozenset[str]) -> None:
        from qsave.evaluator import Evaluator

        self.evaluator = Evaluator.from_spec(ScorerSpec.from_dict(spec))
        self.dimensions = tuple(Dimension(d) for d in dimensions)
        self.explain, self.done = explain, done

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from qsave.evaluator import ScoreItem
        from qsave.results import hash_items

        items = [ScoreItem(**json.loads(text)) for text in batch["item"]]
        hash_items(items)
        keys = [self.evaluator.shell(item, self.dimensions, self.explain).key for item in items]
        keys = [key if key in self.done else "" for key in keys]
        todo = [item for item, key in zip(items, keys, strict=True) if not key]
        fresh = iter(self.evaluator.score_many(todo, dimensions=self.dimensions,
                                               explain=self.explain,
                                               batch_size=max(len(todo), 1)))
        records = ["" if key else dumps(next(fresh).to_record()) for key in keys]
        return {"index": np.asarray(batch["index"]), "record": np.asarray(records, dtype=object),
                "done_key": np.asarray(keys, dtype=object)}


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
    items: Sequence[Any], spec: ScorerSpec, dimensions: Sequence[Dimension], explain: bool,
    config: RayConfig, done: frozenset[str],
) -> Iterator[dict[str, Any]]:
    """Output rows (index, record, done_key) as the actors finish them (any order)."""
    ray, started = _ray_session(config)
    try:
        from ray.data import ActorPoolStrategy

        dataset = ray.data.from_items(rows_of(items)).map_batches(
            ScoringActor, batch_size=config.batch_size, batch_format="numpy",
            compute=ActorPoolStrategy(size=config.actors),
            fn_constructor_kwargs={"spec": spec.to_dict(),
                                   "dimensions": [d.value for d in dimensions],
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
    items: Sequence[Any], out: str | os.PathLike, spec: ScorerSpec, *,
    dimensions: Iterable[str | Dimension] | None = None, explain: bool = False,
    config: RayConfig = RayConfig(),
) -> FileRun:
    """Score ``items`` (ScoreItems with paths) on Ray and append the rows to ``out``, resumed
    and repaired like ``qsave score`` (:mod:`qsave.results`)."""
    check_unique_ids(list(items))
    dims = spec.scored_dimensions(dimensions)
    output = ResultsOutput(out)
    results: dict[int, VideoResult] = {}
    for row in score_batches(items, spec, dims, explain, config, frozenset(output.done)):
        if row["done_key"]:
            results[row["index"]] = output.done[row["done_key"]]
            continue
        result = VideoResult.from_record(json.loads(row["record"]))
        output.write(result)
        results[row["index"]] = result
    if len(results) != len(items):
        raise QsaveError(f"Ray returned {len(results)} rows for {len(items)} inputs")
    ordered = [results[i] for i in range(len(items))]
    return output.finish(ordered, len(items) - len(output.written))
