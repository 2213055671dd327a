"""One exception family for everything qsave raises on purpose (DESIGN.md, Conventions)."""

import math


class QsaveError(Exception):
    """Base class: catch this to handle any qsave failure of a single item."""


class VideoError(QsaveError):
    """A video could not be opened, decoded or prepared; the message names the file."""


class VideoNotFoundError(VideoError, FileNotFoundError):
    """A video file does not exist (catchable as ``FileNotFoundError`` too)."""


class AnnotationError(QsaveError):
    """A ratings table, manifest or training record is malformed; the message names the row."""


class DuplicateIdError(AnnotationError):
    """Two inputs or two rows carry one id; the message names them."""


class AnnotateError(QsaveError):
    """A request to the annotation project is refused (``qsave annotate``): a bad rating, an
    assignment the user does not hold, a second submit, an import that does not fit; the
    message says which value and why."""


class ModelError(QsaveError):
    """A checkpoint or tokenizer cannot be used as a Q-Save evaluator."""


class UnclosedAnalysisError(ModelError):
    """A think-first analysis did not close ``</think>`` within ``max_new_tokens`` (or ended
    the turn first): there is no rating position to read (Sec. 3.4.1, 4.2.2)."""


class ConfigError(QsaveError):
    """A configuration value is invalid; the message quotes the value."""

    @classmethod
    def require_finite(cls, config: object) -> None:
        """Raise for the first float field of a dataclass that is NaN or infinite (a NaN
        passes every ``<`` and ``>`` check, so range checks alone let it through)."""
        for name, value in vars(config).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise cls(f"{name} ({value}) must be a finite number")


class UsageError(ConfigError):
    """The command line names an input that does not exist or a value out of range (exit 2)."""


class PromptError(QsaveError):
    """A video has no prompt where a dimension needs one (text-video alignment)."""


class LimitError(QsaveError):
    """An input exceeds a configured resource limit; the message gives the figure and the
    limit (the server answers 413)."""


class VideoLimitError(LimitError, VideoError):
    """A video is too large to decode safely (pixels per frame, frames, duration)."""


class PromptLimitError(LimitError):
    """A prompt is longer than the configured limit (characters or tokens)."""


class Cancelled(QsaveError):
    """The work was cancelled by its caller (a request that timed out or hung up)."""


def error_class(name: str) -> type[QsaveError]:
    """The qsave exception class called ``name`` (a typed row error back to an exception);
    any other name gives the base class, so a foreign error type still raises a QsaveError.

    >>> error_class("VideoError").__name__, error_class("RuntimeError").__name__
    ('VideoError', 'QsaveError')
    """
    found = globals().get(name)
    if isinstance(found, type) and issubclass(found, QsaveError):
        return found
    return QsaveError
