"""One exception family for everything qsave raises on purpose (DESIGN.md, Conventions)."""


class QsaveError(Exception):
    """Base class: catch this to handle any qsave failure of a single item."""


class VideoError(QsaveError):
    """A video could not be opened, decoded or prepared; the message names the file."""


class AnnotationError(QsaveError):
    """A ratings table, manifest or training record is malformed; the message names the row."""


class DuplicateIdError(AnnotationError):
    """Two inputs or two rows carry one id; the message names them."""


class ModelError(QsaveError):
    """A checkpoint or tokenizer cannot be used as a Q-Save evaluator."""


class ConfigError(QsaveError):
    """A configuration value is invalid; the message quotes the value."""


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
