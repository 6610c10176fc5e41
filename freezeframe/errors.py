"""Errors that the CLI reports as one clear sentence instead of a traceback."""

from __future__ import annotations

import contextlib
from typing import Iterator


class FreezeframeError(Exception):
    """Base class: the message is a complete sentence meant for the user."""


class InputError(FreezeframeError):
    """Bad command-line or API input, found before any work starts."""


class StoreError(FreezeframeError):
    """A store that is missing, malformed or incompatible with the request."""


class BackboneError(FreezeframeError):
    """A backbone that cannot be built or whose weights cannot be loaded."""


class OutputBufferError(ValueError):
    """An `out=` buffer of the wrong shape, dtype or layout for the rows asked for: the caller's error."""


# what a caller asked for wrongly (a missing array or video, a frame out of range, a wrong `out=` buffer), never a
# damaged file
API_ERRORS = (KeyError, IndexError, OutputBufferError)


def library_error(where: object, exc: BaseException, kind: type[FreezeframeError] = StoreError) -> FreezeframeError:
    """One sentence naming `where` for whatever a library (zarr, h5py, numcodecs, safetensors, torch) raised
    while reading a file: a damaged or hostile file is an error of that file, not a traceback."""
    detail = (str(exc).strip().splitlines() or [""])[0][:300]
    return kind(f"{where} cannot be read ({type(exc).__name__}{': ' + detail if detail else ''}); the file is "
                "damaged or not what freezeframe wrote.")


@contextlib.contextmanager
def library_errors(where: object, kind: type[FreezeframeError] = StoreError) -> Iterator[None]:
    """Turn any exception a library raises inside the block into `library_error` (freezeframe's own errors and
    API_ERRORS pass unchanged). For paths that are not per-row hot; a hot path inlines the same try/except."""
    try:
        yield
    except (FreezeframeError, *API_ERRORS):
        raise
    except Exception as exc:  # noqa: BLE001 - a hostile file can make a library raise almost anything
        raise library_error(where, exc, kind) from None
