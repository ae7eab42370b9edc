"""Errors the command line turns into one clear line and a non-zero exit."""


class ExddError(Exception):
    """Base class: the message names the file or setting and the problem."""


class ConfigError(ExddError):
    """A bad or missing configuration value."""


class DataError(ExddError):
    """Unreadable image, missing mask, size mismatch, empty split, ..."""


class ModelError(ExddError):
    """A model directory that is missing, incomplete or tampered with."""


class BackboneError(ExddError):
    """Unknown backbone, or its weights cannot be reached."""
