"""Errors the command line turns into one clear line and a non-zero exit."""

from typing import Any


class ExddError(Exception):
    """Base class: the message names the file or setting and the problem."""


class ConfigError(ExddError):
    """A bad or missing configuration value."""


class DataError(ExddError):
    """Unreadable image, missing mask, size mismatch, empty split, ..."""

    @classmethod
    def invalid(cls, source: object, what: str, err: Any) -> "DataError":
        """A file that fails its record's validation (a pydantic ``ValidationError``),
        as one line: the file, what it should be, the first problem and where."""
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "top level"
        return cls(f"{source}: not {what} ({where}: {first['msg']})")


class ModelError(ExddError):
    """A model directory that is missing, incomplete or tampered with."""


class BackboneError(ExddError):
    """Unknown backbone, or its weights cannot be reached."""


class StorageError(ExddError):
    """A result cannot be written: disk full, read-only or not permitted. Nothing of it is
    left half-written."""

    @classmethod
    def writing(cls, target: object, err: OSError) -> "StorageError":
        return cls(f"{target}: cannot write ({err.strerror or type(err).__name__})")
