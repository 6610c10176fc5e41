"""Loading other libraries' models locally and quietly: Hugging Face hub lookups from the local cache only, and
their log lines silenced while freezeframe says what went wrong in one sentence. Shared by the backbones, the text
encoders and the BERT-initialised heads."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """Silence library log lines (e.g. open_clip's download errors) while we raise our own sentence."""
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@contextlib.contextmanager
def hub_offline(offline: bool) -> Iterator[None]:
    """Make huggingface_hub use only its local cache, so a missing network fails at once instead of retrying."""
    if not offline:
        yield
        return
    import huggingface_hub.constants as hub_constants

    before = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = before
