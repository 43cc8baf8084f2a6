"""The one exception kind for bad input. Every error the library raises for something a user gave — a model
name, a chip file, a dtype, a plan, a compression variant — is a `UserError` (each layer's own error class
derives from it), so a caller catches one type and the CLI turns it into one line, ``error: ...``, exit 2."""


class UserError(ValueError):
    """Bad input: the message names the field, the value and what is allowed."""
