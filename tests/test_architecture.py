"""The import rules of docs/architecture.md, read from the source: dependencies point down,
train never imports eval, and eval, data and the scoring core's rows never import torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "qsave"
LAYERS = {  # module (or package) → layer
    "errors": "leaf", "dimensions": "leaf", "jsonl": "leaf", "scores": "leaf",
    "registry": "leaf", "prompts": "leaf", "hub": "leaf", "loopback": "leaf", "video": "video",
    "spec": "spec",
    "evaluator": "pipeline", "sources": "pipeline", "results": "pipeline", "model": "model",
    "data": "data", "eval": "eval", "train": "train", "serve": "serve", "annotate": "annotate",
    "cli": "app",
    "demo": "app", "demo_recipe": "app", "__init__": "app",
}
MAY_IMPORT = {  # layer → the layers it may import at module level (docs/architecture.md)
    "leaf": {"leaf"},
    "video": {"leaf", "video"},
    "spec": {"leaf", "video", "spec"},
    "pipeline": {"leaf", "video", "spec", "pipeline"},
    "model": {"leaf", "video", "spec", "pipeline", "model"},
    "data": {"leaf", "data"},
    "eval": {"leaf", "eval"},
    "train": {"leaf", "video", "spec", "pipeline", "model", "data", "train"},
    "serve": {"leaf", "video", "spec", "pipeline", "serve"},
    "annotate": {"leaf", "data", "annotate"},
}
LAZY_ALSO = {"pipeline": {"model"}}  # load_backend imports the backend a spec names
TORCH_FREE = ["qsave.scores", "qsave.jsonl", "qsave.spec", "qsave.evaluator", "qsave.sources",
              "qsave.results", "qsave.eval.report", "qsave.eval.benchmarks",
              "qsave.eval.kinds", "qsave.eval.prompt_shuffle", "qsave.model.tiny_size",
              "qsave.demo_recipe", "qsave.cli",
              "qsave.data.records", "qsave.data.annotations", "qsave.data.splits",
              "qsave.data.synthetic", "qsave.data.report", "qsave.video.inputs"]


def modules():
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        yield ".".join(("qsave", *parts)), path


def layer_of(module: str) -> str:
    return LAYERS[module.split(".")[1]]


def qsave_imports(path: Path):
    """(imported qsave module, whether at module level) of every import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name.startswith("qsave.") and not _type_only(tree, node):
                yield name, id(node) in top


def _type_only(tree, node) -> bool:
    """Imports under ``if TYPE_CHECKING:`` do not run."""
    return any(isinstance(block, ast.If) and getattr(block.test, "id", "") == "TYPE_CHECKING"
               and any(child is node for child in ast.walk(block)) for block in ast.walk(tree))


@pytest.mark.parametrize("module,path", list(modules()), ids=lambda x: str(x))
def test_dependencies_point_down(module, path):
    layer = layer_of(module)
    if layer == "app":
        return
    wrong = []
    for name, top_level in qsave_imports(path):
        target = layer_of(name)
        allowed = MAY_IMPORT[layer] | (set() if top_level else LAZY_ALSO.get(layer, set()))
        if target not in allowed:
            wrong.append(f"{name} ({target})")
    assert not wrong, f"{module} ({layer}) imports {wrong}; see docs/architecture.md"


def test_train_never_imports_eval():
    for module, path in modules():
        if layer_of(module) == "train":
            assert not [n for n, _ in qsave_imports(path)
                        if n == "qsave.eval" or n.startswith("qsave.eval.")], module


def test_eval_data_and_the_rows_load_without_torch():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in TORCH_FREE)
            + "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=SRC.parent)
    assert out.stdout.strip() == "[]", out.stdout
