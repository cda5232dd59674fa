"""Errors a user can act on. The CLI and the UI show their message, never a traceback."""


class SAVError(Exception):
    """Base of every error caused by input: a model id, a file, a setting."""


class ModelLoadError(SAVError):
    """The model or its processor could not be loaded, or has no attention heads we can read."""


class DataError(SAVError, ValueError):
    """An image, a data file, a label or a setting is unusable."""


class ClassifierFileError(SAVError):
    """A saved classifier folder is missing parts, was altered, or belongs to another model."""
