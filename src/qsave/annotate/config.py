"""What an annotation project is set to: rating levels, reason codes and every default once.

The levels are the paper's five (Sec. 3.3, Bad … Excellent; score = index + 1). A Bad, Poor or
Fair rating needs a reason (Fig. 2, step 2): one of the codes of its dimension, which are the
reason codes of :data:`qsave.data.describe.REASON_TEMPLATES` (the defect kinds of the synthetic
corpus, so a rater's reason becomes the analysis of a training record), or ``"other"`` with free
text. :class:`AnnotateConfig` is written into ``DIR/project.json`` when a project is created.

>>> AnnotateConfig().raters_needed("test"), score_of("Good")
(12, 4)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from qsave.dimensions import RATINGS
from qsave.errors import AnnotateError, ConfigError

LEVELS: tuple[str, ...] = RATINGS  # Bad … Excellent, ascending; score = index + 1
LOW_LEVELS: tuple[str, ...] = LEVELS[:3]  # Bad, Poor, Fair: a reason is required (Fig. 2)
OTHER = "other"  # the reason code for anything not listed; needs free text
REASONS: dict[str, tuple[str, ...]] = {  # dimension → reason codes a rater may choose
    "visual": ("blur", "noise", "blockiness", "banding", "lowres", OTHER),
    "dynamic": ("stutter", "frozen", "jitter", "flicker", "teleport", "deform", OTHER),
    "alignment": ("wrong_color", "wrong_shape", "wrong_count", "wrong_direction",
                  "missing_object", OTHER),
}
PAPER_RATERS: dict[str, int] = {"train": 3, "test": 12, "rl": 3}  # Sec. 3.3 and App. C.1
PROJECT_FILE = "project.json"


def score_of(level: str) -> int:
    """The 1..5 score of a level word (Bad = 1 … Excellent = 5); an unknown word raises."""
    if level not in LEVELS:
        raise AnnotateError(f"unknown level {level!r}; valid levels: {', '.join(LEVELS)}")
    return LEVELS.index(level) + 1


def level_of(score: int) -> str:
    """The level word of a 1..5 score."""
    return LEVELS[int(score) - 1]


@dataclass(frozen=True)
class AnnotateConfig:
    """How a project assigns, audits and limits (Sec. 3.3; App. C.1 for the audits)."""

    raters_per_split: dict[str, int] = field(default_factory=lambda: dict(PAPER_RATERS))
    # raters each video of a split reaches; at least the paper's 3 train, 12 test, 3 rl, so an
    # export always passes `qsave data mos`
    pilot_size: int = 5  # reference videos in the pilot round
    pilot_pass: float = 0.7  # share of pilot ratings within ±1 level of the reference to pass
    gold_every: int = 10  # one gold video per this many formal assignments (0: no gold)
    audit_min_gold: int = 3  # gold videos rated before the audit judges a rater
    audit_pass: float = 0.6  # share within ±1 level on gold below which a rater is paused
    session_hours: float = 12.0  # a login lasts this long
    assignment_hours: float = 24.0  # an unsubmitted video stops holding a rater slot after this
    # (it goes to another rater; the first may still submit, one rating more than needed)
    max_free_text: int = 2000  # characters of free text; longer is an error, not truncated
    min_password: int = 8  # characters of a password

    def __post_init__(self) -> None:
        ConfigError.require_finite(self)
        if set(self.raters_per_split) != set(PAPER_RATERS):
            raise ConfigError(f"raters_per_split ({self.raters_per_split}) must give exactly "
                              f"the splits {', '.join(PAPER_RATERS)}")
        for split, least in PAPER_RATERS.items():
            if int(self.raters_per_split[split]) < least:
                raise ConfigError(f"raters_per_split[{split!r}] ({self.raters_per_split[split]})"
                                  f" must be at least {least} (Sec. 3.3)")
        for name in ("pilot_size", "audit_min_gold", "max_free_text", "min_password"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} ({getattr(self, name)}) must be at least 1")
        if self.gold_every < 0:
            raise ConfigError(f"gold_every ({self.gold_every}) must be ≥ 0 (0: no gold)")
        for name in ("pilot_pass", "audit_pass"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} ({getattr(self, name)}) must be in [0, 1]")
        for name in ("session_hours", "assignment_hours"):
            if not getattr(self, name) > 0 or math.isinf(getattr(self, name)):
                raise ConfigError(f"{name} ({getattr(self, name)}) must be positive")

    def raters_needed(self, split: str) -> int:
        """How many raters a video of ``split`` reaches."""
        return int(self.raters_per_split[split])

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> AnnotateConfig:
        """From ``project.json``; an unknown key raises and lists the valid ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown project settings {unknown}; valid: {', '.join(known)}")
        return cls(**data)  # type: ignore[arg-type]

    def write(self, folder: Path) -> Path:
        path = folder / PROJECT_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: Path) -> AnnotateConfig:
        path = folder / PROJECT_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"cannot read the project settings {path}: {error}") from error
        return cls.from_dict(data)
