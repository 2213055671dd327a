"""``qsave annotate``: the rating web app's commands (the lead adds ``annotate_app`` to ``qsave``).

Start a project and rate::

    qsave annotate import --project ratings/ videos.csv
    qsave annotate user --project ratings/ alice --role owner
    qsave annotate serve --project ratings/

Each command is a thin wrapper over :class:`qsave.annotate.store.Project`; errors are qsave
errors, printed as one line by ``qsave``'s entry point.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from qsave.errors import AnnotateError, ConfigError, UsageError
from qsave.loopback import is_loopback

PASSWORD_ENV = "QSAVE_ANNOTATE_PASSWORD"
console = Console()
annotate_app = typer.Typer(
    no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]},
    help="The rating web app of the paper's annotation workflow (Sec. 3): import videos, add "
         "users, serve the pages, export ratings for `qsave data`.")


@dataclass(frozen=True)
class ServeSettings:
    """Where ``qsave annotate serve`` listens."""

    host: str = "127.0.0.1"  # loopback; another address needs --public
    port: int = 8000


_Project = Annotated[Path, typer.Option("--project", help="The project folder (project.json, "
                                        "annotate.sqlite3).")]


def _open(folder: Path):  # -> Project (the store imports sqlalchemy: loaded on use)
    from qsave.annotate.store import Project

    return Project.open(folder)


@annotate_app.command("serve")
def serve(
    project: _Project,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")]
    = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    secure_cookies: Annotated[bool, typer.Option(
        help="Mark cookies Secure (sent over https only): use it behind an https proxy.")]
    = False,
    public: Annotated[bool, typer.Option(
        help="Allow a non-loopback --host (put https in front: passwords travel in forms).")]
    = False,
) -> None:
    """Serve the rating pages (login, training, pilot, formal rounds, owner page)."""
    import uvicorn

    from qsave.annotate.app import create_app

    settings = ServeSettings(**{k: v for k, v in {"host": host, "port": port}.items()
                                if v is not None})
    if not is_loopback(settings.host) and not public:
        raise UsageError(f"--host {settings.host} is not a loopback address: pass --public to "
                         "serve other machines (behind https, with --secure-cookies)")
    opened = _open(project)
    cookies = ("Secure (sent over https only)" if secure_cookies else
               "not Secure (plain http; --secure-cookies when served over https)")
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    console.print(f"serving {project} on http://{shown}:{settings.port}/ — cookies: {cookies}; "
                  f"database: {_safe_url(opened.url)}", soft_wrap=True, markup=False)
    try:
        uvicorn.run(create_app(opened, secure_cookies=secure_cookies), host=settings.host,
                    port=settings.port, log_level="info")
    finally:
        opened.close()


def _safe_url(url: str) -> str:
    """A database URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@annotate_app.command("import")
def import_(
    project: _Project,
    manifest: Annotated[Path, typer.Argument(help="Videos table (video_id, path, prompt, "
                                             "generator, split) or manifest.jsonl.")],
    config: Annotated[Path | None, typer.Option(
        help="JSON of AnnotateConfig fields for a new project (raters_per_split, pilot_size, "
             "gold_every, …); ignored when the project exists.")] = None,
    database_url: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL of a new project's database (default: SQLite in the project "
             "folder), e.g. postgresql+psycopg://user@host/qsave for several servers; "
             "ignored when the project exists.")] = None,
) -> None:
    """Import videos (idempotent by video_id); creates the project when missing."""
    from qsave.annotate.config import AnnotateConfig
    from qsave.annotate.store import Project

    settings = AnnotateConfig.from_dict(_read_json(config)) if config else None
    existed = (project / "project.json").is_file()
    with Project.open_or_create(project, config=settings, url=database_url) as opened:
        added = opened.import_videos(manifest)
        total = len(opened.videos())
    for flag, given in (("--config", config), ("--database-url", database_url)):
        if given and existed:
            console.print(f"[yellow]{project} exists: {flag} is ignored (the project keeps the "
                          "settings it was created with)[/yellow]", soft_wrap=True)
    console.print(f"{'opened' if existed else 'created'} {project}: {added} new video(s), "
                  f"{total} in all", soft_wrap=True, markup=False)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read --config {path}: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path} must hold a JSON object of AnnotateConfig fields")
    return data


@annotate_app.command("user")
def user(
    project: _Project,
    name: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option(help="rater or owner.")] = "rater",
    password_file: Annotated[Path | None, typer.Option(
        help=f"File whose first line is the password (else ${PASSWORD_ENV}, else a prompt).")]
    = None,
) -> None:
    """Add a rater or an owner (the password is stored as an argon2 hash)."""
    password = _password(password_file)
    with _open(project) as opened:
        added = opened.add_user(name, password, role)
    console.print(f"added {added.role} {added.name!r} (stage {added.stage})", markup=False)


def _password(password_file: Path | None) -> str:
    """The new password: the file's first line, else the environment, else typed twice."""
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise ConfigError(f"cannot read --password-file {password_file}: {error}") from error
        if not lines or not lines[0]:
            raise ConfigError(f"--password-file {password_file} holds no password on its "
                              "first line")
        return lines[0]
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@annotate_app.command("reference")
def reference(
    project: _Project,
    table: Annotated[Path, typer.Argument(help="Reference ratings: video_id, dimension and a "
                                          "level (Bad … Excellent) or a score/mos (1..5).")],
    use: Annotated[str, typer.Option(help="pilot (the pilot round, with feedback) or gold "
                                     "(audits mixed into formal rounds).")],
) -> None:
    """Set the owner's reference ratings of videos, for the pilot round or as gold."""
    levels = read_references(table)
    with _open(project) as opened:
        for video_id, by_dimension in levels.items():
            opened.set_reference(video_id, by_dimension, use)
    console.print(f"{len(levels)} {use} reference video(s) set from {table}", markup=False)


def read_references(path: Path) -> dict[str, dict[str, str]]:
    """video_id → dimension → level, from a table with a ``level`` column (Bad … Excellent),
    or a ``score`` or ``mos`` column of whole numbers 1..5 (``expert.csv`` of an export)."""
    from qsave.annotate.config import LEVELS, level_of
    from qsave.data.annotations import read_table

    frame = read_table(path)
    column = next((c for c in ("level", "score", "mos") if c in frame.columns), None)
    if column is None or not {"video_id", "dimension"} <= set(frame.columns):
        raise AnnotateError(f"{path} needs the columns video_id, dimension and one of level, "
                            f"score, mos; it has {', '.join(map(str, frame.columns))}")
    found: dict[str, dict[str, str]] = {}
    for number, row in enumerate(frame.itertuples(index=False), start=1):
        value = getattr(row, column)
        if column == "level":
            level = str(value).strip().capitalize()
            if level not in LEVELS:
                raise AnnotateError(f"{path}, row {number}: unknown level {value!r}; valid: "
                                    f"{', '.join(LEVELS)}")
        else:
            try:
                score = float(value)
            except (TypeError, ValueError):
                score = float("nan")
            if score not in (1, 2, 3, 4, 5):
                raise AnnotateError(f"{path}, row {number}: {column} {value!r} is not a "
                                    "whole number 1..5")
            level = level_of(int(score))
        found.setdefault(str(row.video_id), {})[str(row.dimension).strip().lower()] = level
    return found


@annotate_app.command("example")
def example(
    project: _Project,
    video_id: Annotated[str, typer.Argument(help="A video of the project.")],
    dimension: Annotated[str, typer.Option(help="visual, dynamic or alignment.")],
    level: Annotated[str, typer.Option(help="Bad, Poor, Fair, Good or Excellent.")],
    note: Annotated[str, typer.Option(help="What the rater should notice.")] = "",
) -> None:
    """Mark a video as the training page's example of a level in one dimension."""
    with _open(project) as opened:
        opened.set_example(video_id, dimension, level, note)
    console.print(f"{video_id}: training example of {level} {dimension}", markup=False)


@annotate_app.command("export")
def export(
    project: _Project,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the tables to.")],
) -> None:
    """Write ratings.csv, videos.csv, expert.csv, review.csv (the formats of `qsave data
    mos|screen|records`), calibration.csv and summary.json."""
    from qsave.annotate.export import export as write

    with _open(project) as opened:
        written = write(opened, out)
    console.print(f"wrote {', '.join(str(p) for p in written.values())}", soft_wrap=True,
                  markup=False)
