"""Errors of workload capture, in a module without torch so that the CLI can catch them before importing it."""

from xpusim.errors import UserError


class CaptureError(UserError, RuntimeError):
    """The model raised while being run for capture; the message names the model and the original error."""


class ModelSpecError(UserError):
    """A model name, file or factory the user gave cannot be resolved; the message says what would work."""
