"""Errors that the CLI reports as one clear sentence instead of a traceback."""


class FreezeframeError(Exception):
    """Base class: the message is a complete sentence meant for the user."""


class InputError(FreezeframeError):
    """Bad command-line or API input, found before any work starts."""


class StoreError(FreezeframeError):
    """A store that is missing, malformed or incompatible with the request."""


class BackboneError(FreezeframeError):
    """A backbone that cannot be built or whose weights cannot be loaded."""
