"""Scoring into a results file that a rerun resumes and repairs (``qsave score``, Ray).

Rows are appended as they are done (flushed and fsynced), so a killed run loses at most the
videos in flight. A rerun:

* truncates a damaged last line (a write cut anywhere, also inside a multi-byte character);
* reports each complete line that is not a valid row by its number, keeps it, and goes on;
* skips every input whose resume key (content hash, id, prompt, model, settings) already has a
  successful row, and scores the rest — inputs that failed before are tried again;
* leaves exactly one row per input of the run: an input's older rows under the same id and
  settings (an error row, or the row of a file that has changed since) are taken out of the
  file; replaced successful rows are kept in ``<name>.replaced.jsonl``.

What was repaired is in :attr:`FileRun.repairs`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from qsave.dimensions import Dimension
from qsave.errors import UsageError
from qsave.evaluator import Evaluator, ScoreItem
from qsave.jsonl import JsonlWriter, drop_lines
from qsave.scores import VideoResult, content_hash, read_results
from qsave.sources import check_unique_ids


@dataclass
class FileRun:
    """What a run did to its results file."""

    results: list[VideoResult] = field(default_factory=list)  # one per input, input order
    written: int = 0  # rows scored and written now
    skipped: int = 0  # inputs whose row was already there
    replaced: int = 0  # older rows of this run's inputs taken out (errors, changed files)
    repairs: list[str] = field(default_factory=list)  # what was wrong with the file

    @property
    def failed(self) -> list[VideoResult]:
        return [r for r in self.results if r.error is not None]


class ResultsOutput:
    """A results file opened for a resumable run: what is done, where new rows go. The file is
    read at once but repaired and opened for writing only at the first row (or at ``finish``),
    so a run that fails before scoring (a model that cannot load) leaves it untouched."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.read = read_results(self.path)  # repairing changes no line number of a whole row
        self.repairs = [f"{self.path}:{n}: not a valid row, kept and skipped ({message})"
                        for n, message in self.read.invalid]
        self.rows = self.read.rows
        self.done = {r.key: r for _, r in self.read.rows if r.ok}  # resume key → successful row
        self.written: list[VideoResult] = []
        self._writer: JsonlWriter | None = None

    @property
    def writer(self) -> JsonlWriter:
        if self._writer is None:
            self._writer = JsonlWriter(self.path, self.read.lines)
            if self._writer.repaired:
                self.repairs.insert(0, f"{self.path}: {self._writer.repaired}")
        return self._writer

    def write(self, result: VideoResult) -> None:
        self.writer.write(result.to_record())
        self.written.append(result)

    def finish(self, results: Sequence[VideoResult], skipped: int) -> FileRun:
        """Close the file and take out the older rows of this run's inputs."""
        self.writer.close()
        answers = {r.input_key: r for r in results}
        kept = {id(r) for r in results}
        old = [(n, r) for n, r in self.rows if r.input_key in answers and id(r) not in kept]
        if old:
            replaced = [r for _, r in old if r.ok]
            if replaced:
                with JsonlWriter(self.path.with_suffix(".replaced.jsonl")) as archive:
                    for result in replaced:
                        archive.write(result.to_record())
            drop_lines(self.path, {n for n, _ in old})
            self.repairs.append(f"{self.path}: replaced {len(old)} older row(s) of these inputs"
                                + (f" (the successful ones kept in {self.path.stem}"
                                   ".replaced.jsonl)" if replaced else ""))
        return FileRun(list(results), len(self.written), skipped, len(old), self.repairs)


def hash_items(items: Iterable[ScoreItem]) -> None:
    """Fill in the content hash of every item that is a readable file (for the resume key)."""
    for item in items:
        if item.content_hash is None and item.path is not None and Path(item.path).is_file():
            with suppress(OSError):  # unreadable: scoring records the error on its row
                item.content_hash = content_hash(item.path)


def check_output(path: str | os.PathLike) -> None:
    """Refuse a results path that would overwrite or append into something else: a folder, a
    path under a regular file, or a non-empty file without a single qsave score row (a
    manifest, a prompts file); ``UsageError`` says which."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"-o {path} is a folder; give a file, e.g. {path / 'scores.jsonl'}")
    blocked = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise UsageError(f"-o {path}: {blocked} is a file, not a folder")
    if not path.is_file() or path.stat().st_size == 0:
        return
    read = read_results(path)
    if not read.rows:
        why = read.invalid[0][1] if read.invalid else "no complete JSON line"
        raise UsageError(f"-o {path} is not a qsave score file (line 1: {why}); refusing to "
                         "write into it: give another file")


def score_to_jsonl(
    evaluator: Evaluator, items: Sequence[ScoreItem], out: str | os.PathLike, *,
    dimensions: Iterable[str | Dimension] | None = None, explain: bool = False,
    batch_size: int = 8, on_result: Callable[[VideoResult], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    load: Callable[[], Evaluator] | None = None,
) -> FileRun:
    """Score the inputs not yet in ``out``, append one row each, leave one row per input;
    ``on_start`` is told how many inputs are left to score (progress). ``evaluator`` may be
    planned (:class:`~qsave.evaluator.PlannedBackend`): ``load`` then gives the model, and is
    called only when an input is left to score."""
    check_unique_ids(list(items))
    dims = evaluator.spec.scored_dimensions(dimensions)
    output = ResultsOutput(out)
    hash_items(items)

    def answers_of(evaluator: Evaluator) -> list[VideoResult | None]:
        return [output.done.get(evaluator.shell(item, dims, explain).key) for item in items]

    answers = answers_of(evaluator)
    if load is not None and None in answers:
        evaluator = load()
        answers = answers_of(evaluator)  # the loaded model's keys (the same, as planned)
    todo = [item for item, answer in zip(items, answers, strict=True) if answer is None]
    if on_start is not None:
        on_start(len(todo))
    fresh = iter(evaluator.score_many(todo, dimensions=dims, explain=explain,
                                      batch_size=batch_size,
                                      on_result=_then(output.write, on_result)))
    results = [answer if answer is not None else next(fresh) for answer in answers]
    return output.finish(results, len(items) - len(todo))


def _then(first: Callable, second: Callable | None) -> Callable:
    def both(result: VideoResult) -> None:
        first(result)
        if second is not None:
            second(result)

    return both
