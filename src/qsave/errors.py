"""One exception family for everything qsave raises on purpose (DESIGN.md, Conventions)."""


class QsaveError(Exception):
    """Base class: catch this to handle any qsave failure of a single item."""


class VideoError(QsaveError):
    """A video could not be opened, decoded or prepared; the message names the file."""


class AnnotationError(QsaveError):
    """A ratings table, manifest or training record is malformed; the message names the row."""


class ModelError(QsaveError):
    """A checkpoint or tokenizer cannot be used as a Q-Save evaluator."""


class ConfigError(QsaveError):
    """A configuration value is invalid; the message quotes the value."""
