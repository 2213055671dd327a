"""Train the tiny model with the demo recipe and write the shipped ``tiny-demo`` model folder.

Run it once per change of the recipe (``configs/train-tiny-cpu.yaml``,
``configs/synth-tiny-cpu.yaml``, ``DemoConfig``'s defaults) and commit the folder: git keeps
every version of the weights. ``tests/test_demo.py`` fails while the shipped provenance's
recipe differs from the current one.

    .venv/bin/python scripts/ship_tiny_demo.py            # ~10 min on 2 CPU cores

It trains in ``--workdir`` (``runs/ship-tiny-demo``, git-ignored; a second run with the same
recipe skips the finished stages, as ``qsave train`` does), then writes
``src/qsave/assets/tiny-demo``:
float16 safetensors, the processor, ``qsave_scorer.json`` and ``provenance.json`` (recipe
config, seed, git commit, held-out SRCC/PLCC per dimension and n, measured on the written
float16 weights by the code ``qsave demo`` runs), and ``src/qsave/assets/tiny-demo-held-out``:
the held-out clips those figures were measured on, drawn from the seed and encoded once
(libx264 under PyAV does not write the same bytes on every run, see
``qsave.demo.write_held_out``). It refuses a model folder over 10 MB or held-out clips over
6 MB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console

from qsave.demo import (
    MAX_HELD_OUT_BYTES,
    MAX_SHIPPED_BYTES,
    export_model,
    folder_bytes,
    shipped_held_out_dir,
    write_held_out,
)
from qsave.demo_recipe import DemoConfig, train_demo
from qsave.spec import shipped_tiny_demo_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/ship-tiny-demo"))
    parser.add_argument("--dest", type=Path, default=shipped_tiny_demo_dir())
    parser.add_argument("--held-out-dest", type=Path, default=shipped_held_out_dir())
    args = parser.parse_args(argv)
    console = Console()
    clock = time.perf_counter()
    config = DemoConfig()  # the recipe as it is: nothing here may change it
    report = train_demo(args.workdir / "train", console, config=config)
    held_out = args.workdir / "tiny-demo-held-out"  # encoded once, shipped, scored
    shutil.rmtree(held_out, ignore_errors=True)
    write_held_out(held_out, config.synth())
    staged = args.workdir / "tiny-demo"
    _, provenance = export_model(report.checkpoint, staged,
                                 config.provenance(args.workdir / "train"), held_out, report)
    for folder, limit in ((staged, MAX_SHIPPED_BYTES), (held_out, MAX_HELD_OUT_BYTES)):
        if folder_bytes(folder) > limit:
            console.print(f"[red]{folder} holds {folder_bytes(folder):,} bytes, over "
                          f"{limit:,}: not shipped")
            return 1
    size = folder_bytes(staged) + folder_bytes(held_out)
    for source, dest in ((staged, args.dest), (held_out, args.held_out_dest)):
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(source, dest)
    console.print(f"wrote {args.dest} and {args.held_out_dest} ({size:,} bytes, revision "
                  f"{provenance['revision']}) in {time.perf_counter() - clock:.0f} s; "
                  "held-out figures:")
    console.print(json.dumps(provenance["held_out"]["dimensions"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
