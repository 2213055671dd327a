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
    n: Annotated[int | None, typer.Option(help="Number of clips [SynthConfig: 24].")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed of the corpus [0].")] = None,
    size: Annotated[int | None, typer.Option(help="Frame width and height, pixels [64].")] = None,
    fps: Annotated[int | None, typer.Option(help="Frames per second [8].")] = None,
    seconds: Annotated[float | None, typer.Option(help="Duration of each clip [2.0].")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML/JSON file of SynthConfig fields; flags override it.")
    ] = None,
) -> None:
    """Write synthetic AI-video-like clips with labelled defects, a manifest and ratings."""
    from qsave.data.synthetic import SynthConfig, load_synth_config, write_corpus

    flags = {"n": n, "seed": seed, "size": size, "fps": fps, "seconds": seconds}
    base = load_synth_config(config) if config else {}
    given = {k: v for k, v in flags.items() if v is not None}
    settings = SynthConfig.from_mapping({**base, **given})
    corpus = write_corpus(out, settings)
    console.print(
        f"wrote {len(corpus.clips)} clips, {corpus.manifest_path}, {corpus.ratings_path}, "
        f"{corpus.raters_path}"
    )
    for error in corpus.errors:
        console.print(f"[red]failed:[/red] {error}")
    if corpus.errors:
        raise typer.Exit(1)


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
