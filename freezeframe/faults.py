"""Deterministic crash points for fault-injection tests (tests/e2e/test_faults.py, benchmarks/fault_injection.py).

`FREEZEFRAME_FAULT=<site>:<n>` makes the process SIGKILL itself the n-th time it reaches `fault_point(site)`
(counted per process), e.g. `shard.rename:2` dies just before the second shard is renamed into place.
Sites: claim (a video claimed), chunk (a chunk of a video's frames handed to the shard writer), shard.array (one
array of a shard written), shard.rename (a shard written, before its rename), shard.marker (renamed, before
its commit marker), json.replace (a JSON file written under its temporary name, before the rename),
committed (a shard committed, before its claims are given back), index (before the index is merged at the end
of a run), decode (a video about to be opened, in a decode worker or with --workers 0 in the main process;
`decode.hang` makes it hang there instead of dying), publish.file (a file about to be copied by publish).
With `FREEZEFRAME_FAULT_ONCE=<marker file>` as well, the kill is one-shot across processes: a process dies there
only if it creates the marker file first (so a restarted Ray actor, counting afresh, does not die again).
Unset, as always outside tests, `fault_point` is an empty function.
"""

from __future__ import annotations

import os
import signal
import time

SITES = ("claim", "chunk", "shard.array", "shard.rename", "shard.marker", "json.replace", "committed", "index",
         "decode", "decode.hang", "publish.file")


def _parse(spec: str) -> tuple[str, int]:
    site, _, count = spec.rpartition(":")
    if site not in SITES or not count.isdigit() or int(count) < 1:
        raise ValueError(f"FREEZEFRAME_FAULT={spec!r}: expected <site>:<n> with n >= 1 and a site among {SITES}")
    return site, int(count)


def _noop(site: str) -> None:
    """No fault armed."""


def _armed(site: str) -> None:
    """Count arrivals at the armed site; die at the n-th, as abruptly as a power cut allows a process to."""
    global _arrivals
    if site == _SITE:
        _arrivals += 1
        if _arrivals == _COUNT and _first_to_die():
            if site.endswith(".hang"):
                time.sleep(24 * 3600)  # a decoder that delivers nothing: a kill, or --workers 0's alarm, ends it
            os.kill(os.getpid(), signal.SIGKILL)


def _first_to_die() -> bool:
    """Without FREEZEFRAME_FAULT_ONCE, always; with it, only for the process that creates its marker file."""
    if not _ONCE:
        return True
    try:
        os.close(os.open(_ONCE, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


_SPEC = os.environ.get("FREEZEFRAME_FAULT", "")
_SITE, _COUNT = _parse(_SPEC) if _SPEC else ("", 0)
_ONCE = os.environ.get("FREEZEFRAME_FAULT_ONCE", "")
_arrivals = 0
fault_point = _armed if _SPEC else _noop
