"""qsave: the Q-Save evaluator of AI-generated video (visual, dynamic, alignment)."""

from qsave.dimensions import RATINGS, Dimension
from qsave.errors import QsaveError

__all__ = ["RATINGS", "Dimension", "QsaveError"]
__version__ = "0.1.0"
