"""The one JSON-lines reader and writer: score files, manifests, records, rollouts.

A line is read from bytes, so a damaged file is reported line by line instead of failing as a
whole: a complete line that is not UTF-8, not JSON or not a JSON object is *bad* (reported with
its number, never dropped silently); a last line without its newline that does not parse is a
*damaged tail* (a write cut anywhere, also inside a multi-byte character), which the writer
truncates before appending. Writes are flushed and fsynced line by line.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "rows.jsonl"
>>> _ = path.write_bytes(b'{"a": 1}\\nnot json\\n{"b": "\\xc3')
>>> read = read_jsonl(path)
>>> read.rows, read.bad, read.tail
([(1, {'a': 1})], [(2, 'not JSON (Expecting value, column 1)')], Tail(line=3, offset=18, size=8))
>>> with JsonlWriter(path) as writer:
...     writer.write({"b": "é"})
>>> writer.repaired
'cut a damaged last line (line 3, 8 bytes)'
>>> [n for n, _ in read_jsonl(path).rows]
[1, 3]
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Tail:
    """A last line without its newline that does not parse: a write cut midway."""

    line: int  # its line number
    offset: int  # byte offset where it starts (the file is truncated there)
    size: int  # its length in bytes


@dataclass
class JsonlRead:
    """The lines of a JSONL file: rows (line number, object), bad lines, a damaged tail."""

    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line number, what is wrong)
    tail: Tail | None = None
    unterminated: bool = False  # the last line parses but lacks its newline

    def issues(self) -> list[tuple[int, str]]:
        """(line number, what is wrong) of every bad line and of the damaged tail, by line."""
        found = list(self.bad)
        if self.tail is not None:
            found.append((self.tail.line, f"cut off ({self.tail.size} bytes, no newline, not "
                                          "a complete JSON object)"))
        return sorted(found)

    def problems(self, name: str | None = None) -> list[str]:
        """:meth:`issues` as ``name:line: message`` texts (``line N: message`` without a
        name)."""
        return [f"{name}:{n}: {m}" if name else f"line {n}: {m}" for n, m in self.issues()]


def parse_line(raw: bytes) -> dict[str, Any] | str:
    """One line's JSON object, or the text saying why it is not one."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"not UTF-8 (byte {error.start})"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return f"not JSON ({error.msg}, column {error.colno})"
    return value if isinstance(value, dict) else f"not a JSON object: {text[:60]!r}"


def read_jsonl(path: str | os.PathLike) -> JsonlRead:
    """All lines of ``path`` (a missing file reads as empty); blank lines are skipped."""
    path = Path(path)
    read = JsonlRead()
    if not path.is_file():
        return read
    data = path.read_bytes()
    offset = 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        start, offset = offset, offset + len(raw) + 1
        last = offset > len(data)
        if not raw.strip():
            continue
        parsed = parse_line(raw)
        if isinstance(parsed, dict):
            read.rows.append((number, parsed))
            read.unterminated = last
        elif last:
            read.tail = Tail(number, start, len(raw))
        else:
            read.bad.append((number, parsed))
    return read


def repair(path: Path, read: JsonlRead | None = None) -> str | None:
    """Make ``path`` safe to append to: truncate a damaged tail, or end a whole last line with
    its newline (``read``: the file as already read, else it is read now). Returns what was
    done, or None."""
    read = read or read_jsonl(path)
    if read.tail is not None:
        with path.open("r+b") as handle:
            handle.truncate(read.tail.offset)
        return f"cut a damaged last line (line {read.tail.line}, {read.tail.size} bytes)"
    if read.unterminated:
        with path.open("ab") as handle:
            handle.write(b"\n")
        return "ended the last line with its missing newline"
    return None


def dumps(row: dict[str, Any]) -> str:
    """The line of one row (UTF-8 text, no escaping of non-ASCII)."""
    return json.dumps(row, ensure_ascii=False)


class JsonlWriter:
    """Appends rows to ``path``, each flushed and fsynced before the next; the file is
    repaired first (``repaired`` says how, or is None; ``read``: the file as already read)."""

    def __init__(self, path: str | os.PathLike, read: JsonlRead | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired = repair(self.path, read) if self.path.is_file() else None
        self._handle = self.path.open("a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self._handle.write(dumps(row) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> Path:
    """Write ``rows`` as a new file, atomically (a temporary file renamed over ``path``)."""
    return _replace(Path(path), [dumps(row).encode() for row in rows])


def drop_lines(path: str | os.PathLike, numbers: set[int]) -> Path:
    """Rewrite ``path`` without the given lines (1-based), every other line byte for byte,
    atomically."""
    lines = Path(path).read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return _replace(Path(path), [ln for n, ln in enumerate(lines, start=1) if n not in numbers])


def _replace(path: Path, lines: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"".join(line + b"\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
