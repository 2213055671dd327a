"""The ``qsave`` command line (typer). Each command mirrors a library function.

Each sub-command below is a thin wrapper: parse flags, call the library, print with rich.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help=__doc__.splitlines()[0],
)
data_app = typer.Typer(no_args_is_help=True, help="Synthetic clips, ratings → MOS, records.")
app.add_typer(data_app, name="data")
console = Console()


# --- data synth (foundation) -------------------------------------------------------------
@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Output directory for clips, manifest and ratings.")],
    n: Annotated[int, typer.Option(help="Number of clips.")] = 24,
    seed: Annotated[int, typer.Option(help="Random seed; the corpus is a function of it.")] = 0,
    size: Annotated[int, typer.Option(help="Frame width and height in pixels.")] = 64,
    fps: Annotated[int, typer.Option(help="Frames per second of the written clips.")] = 8,
    seconds: Annotated[float, typer.Option(help="Duration of each clip.")] = 2.0,
) -> None:
    """Write synthetic AI-video-like clips with labelled defects, a manifest and ratings."""
    from qsave.data.synthetic import SynthConfig, write_corpus

    config = SynthConfig(n=n, seed=seed, size=size, fps=fps, seconds=seconds)
    corpus = write_corpus(out, config)
    console.print(f"wrote {len(corpus.clips)} clips, {corpus.manifest_path}, {corpus.ratings_path}")


# --- demo ----------------------------------------------------------------------------------
@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Working directory for the demo.")] = Path("qsave-demo"),
) -> None:
    """Synthesize a few clips and score one with the embedded tiny model."""
    from qsave.demo import run_demo

    run_demo(out, console)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qsave`` script: the exit code is non-zero when any input failed.

    Commands that finish with failed items raise ``typer.Exit(1)``; usage errors exit 2.
    """
    from qsave.errors import QsaveError

    try:
        app(args=argv, prog_name="qsave")
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    except QsaveError as error:
        console.print(f"[red]error:[/red] {error}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
