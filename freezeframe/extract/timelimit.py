"""A time limit on decoding in the main process (`--workers 0`), where no supervisor can kill a stalled decoder.

SIGALRM interrupts the block: a sleep or a wait, a loop over packets or frames, anything that returns to Python.
What it cannot stop is one call into a C library that never returns; only a decode worker (killed from outside)
is safe from that, and from a crash, which with `--workers 0` ends the run.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from freezeframe.extract.decode import VideoReadError


class DecodeTimeout(VideoReadError):
    """The block ran past its time limit; the message is the reason recorded in failures.jsonl."""


@contextmanager
def time_limit(seconds: float, reason: str) -> Iterator[None]:
    """Raise DecodeTimeout(reason) inside the block once it has run `seconds` (0: no limit).

    Only the main thread receives signals, and an alarm someone else has set is left alone: in either case the block
    runs without a limit.
    """
    if not seconds or threading.current_thread() is not threading.main_thread() or \
            signal.getitimer(signal.ITIMER_REAL)[0]:
        yield
        return

    def expired(_signum, _frame) -> None:
        raise DecodeTimeout(reason)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
