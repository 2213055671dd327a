"""qsave: the Q-Save evaluator of AI-generated video (visual, dynamic, alignment).

>>> import qsave
>>> qsave.Dimension.parse("visual").title
'visual quality'

The names that need torch and transformers (``Evaluator``, ``reward``…) are imported on first
use, so ``import qsave`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from qsave.dimensions import RATINGS, Dimension
from qsave.errors import QsaveError, VideoError

if TYPE_CHECKING:
    from qsave.evaluator import Evaluator, ScoreItem
    from qsave.scores import VideoResult
    from qsave.serve.reward import reward
    from qsave.spec import ScorerSpec
    from qsave.video.inputs import VideoConfig

__all__ = [
    "RATINGS",
    "Dimension",
    "Evaluator",
    "QsaveError",
    "ScoreItem",
    "ScorerSpec",
    "VideoConfig",
    "VideoError",
    "VideoResult",
    "reward",
]
__version__ = "0.1.0"

_LAZY = {
    "Evaluator": "qsave.evaluator",
    "ScoreItem": "qsave.evaluator",
    "VideoResult": "qsave.scores",
    "ScorerSpec": "qsave.spec",
    "VideoConfig": "qsave.video.inputs",
    "reward": "qsave.serve.reward",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qsave' has no attribute {name!r}; public names: {__all__}")
