"""Claims on videos, so that many writers of one feature set extract each video once, with no lock server.

Writers are processes on one or many machines that share the store's filesystem. Inside the feature set:

    claims/<key>.<generation>.json   key = sha256 of the video id (never the id itself); holds the owner
    claims/owners/<token>.json       one per live writer (token = host.pid.nonce); its mtime is the heartbeat

A claim is written whole under a temporary name and hard-linked into place, and a link fails when the name
exists, so exactly one writer gets each generation. A claim is stale when its owner is dead on this host, or
when its owner's heartbeat (the claim's own mtime once the owner file is gone) is older than the lease; a
stale generation g is taken over by linking generation g + 1, so again exactly one taker wins. Ages compare
two mtimes set by the same filesystem (the owner file against this writer's freshly touched one), so
clocks of different machines need not agree. A heartbeat more than CLOCK_SKEW seconds in the future (an mtime
set to 2100 by hand or by a broken clock) counts as none, so such a claim goes stale like any other instead of
holding its video forever. Claims are removed when their video is committed or given back.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from freezeframe.faults import fault_point
from freezeframe.store.files import dumps, read_json
from freezeframe.store.index import load_index
from freezeframe.store.markers import committed_shard_ids, read_marker
from freezeframe.store.layout import SHARDS_DIR, TEMP_PREFIX
from freezeframe.store.location import StorePath, is_remote

CLAIMS_DIR = "claims"
OWNERS_DIR = "owners"
DEFAULT_LEASE = 120.0  # seconds without a heartbeat after which another writer takes a claim over
CLOCK_SKEW = 60.0  # a heartbeat further than this in the future is no heartbeat (a planted or broken mtime)
_CLAIM_NAME = re.compile(r"^([0-9a-f]{32})\.(\d+)\.json$")


def claim_key(video_id: str) -> str:
    """The file-name key of a video's claims: a hash, so any id (slashes, '..', unicode) is safe."""
    return hashlib.sha256(video_id.encode("utf-8")).hexdigest()[:32]


def process_alive(pid: int) -> bool:
    """Whether `pid` runs on this host (a zombie, killed but not yet reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


@dataclass(frozen=True)
class ClaimOwner:
    """The writer process that holds claims: its host, pid and a nonce (pids are reused)."""

    host: str
    pid: int
    token: str

    @classmethod
    def current(cls) -> "ClaimOwner":
        host, pid = socket.gethostname(), os.getpid()
        return cls(host, pid, f"{host}.{pid}.{secrets.token_hex(4)}")


class CommittedVideos:
    """Committed video ids of a feature set: first from the index (its cache, when current), then refreshed by
    reading only the commit markers not seen yet."""

    def __init__(self, feature_set_dir: Path) -> None:
        self.shards_dir = feature_set_dir / SHARDS_DIR
        index = load_index(feature_set_dir)
        self.ids: set[str] = set(index.video_ids())
        self._shards: set[str] = set(index.shard_ids)

    def refresh(self) -> set[str]:
        for shard_id in committed_shard_ids(self.shards_dir):
            if shard_id not in self._shards:
                self.ids.update(video["id"] for video in read_marker(self.shards_dir, shard_id)["videos"])
                self._shards.add(shard_id)
        return self.ids


@dataclass
class Claims:
    """The claims of one feature set as seen by one writer; picklable, so decode workers claim for their writer."""

    feature_set_dir: Path
    owner: ClaimOwner
    lease: float = DEFAULT_LEASE
    _committed: CommittedVideos | None = field(default=None, repr=False)

    @property
    def root(self) -> Path:
        return self.feature_set_dir / CLAIMS_DIR

    def _owner_file(self, token: str) -> Path:
        return self.root / OWNERS_DIR / f"{token}.json"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_committed": None}  # a decode worker reads the index itself, not a pickled copy

    def committed(self) -> CommittedVideos:
        """The committed videos, kept current by `refresh()`."""
        if self._committed is None:
            self._committed = CommittedVideos(self.feature_set_dir)
        return self._committed

    # ---- this writer's heartbeat ------------------------------------------------------------
    def register(self) -> None:
        """Create this writer's owner file (before any claim refers to it)."""
        path = self._owner_file(self.owner.token)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(dumps({"host": self.owner.host, "pid": self.owner.pid, "lease": self.lease}))

    def beat(self) -> float:
        """Touch the owner file; returns its new mtime, the filesystem's 'now' that claim ages are measured at."""
        path = self._owner_file(self.owner.token)
        try:
            os.utime(path)
        except FileNotFoundError:  # removed by a writer that thought this one dead (it was paused): come back
            self.register()
        return path.stat().st_mtime

    def unregister(self) -> None:
        self._owner_file(self.owner.token).unlink(missing_ok=True)

    # ---- claiming ---------------------------------------------------------------------------
    def claim(self, video_ids: Sequence[str]) -> list[str]:
        """Claim every video nobody else holds (stale claims are taken over); returns the ids this writer now
        holds, in order. Videos committed meanwhile are given back, which closes the race with a writer that
        committed a video and removed its claim just before this one claimed it."""
        generations = self._listing()
        now = self.beat()
        held = []
        for video_id in video_ids:
            if self._claim_one(video_id, generations.get(claim_key(video_id), []), now):
                held.append(video_id)
                fault_point("claim")
        if held:
            committed = self.committed().refresh()
            self.forget([v for v in held if v in committed])
            held = [v for v in held if v not in committed]
        return held

    def _claim_one(self, video_id: str, generations: list[int], now: float) -> bool:
        key = claim_key(video_id)
        generation = 0
        if generations:
            top = max(generations)
            record = self._read(key, top)
            if record is None:
                return False  # given back or taken over just now: look again on the next round
            if record.get("owner") == self.owner.token:
                return True
            if not self._stale(record, self.root / f"{key}.{top}.json", now):
                return False
            generation = top + 1
        return self._create(key, generation, video_id)

    def _create(self, key: str, generation: int, video_id: str) -> bool:
        name = f"{key}.{generation}.json"
        temp = self.root / f"{TEMP_PREFIX}{self.owner.token}-{name}"
        record = {"video_id": video_id, "owner": self.owner.token, "host": self.owner.host, "pid": self.owner.pid,
                  "claimed": time.time()}
        temp.write_bytes(dumps(record))
        try:
            os.link(temp, self.root / name)  # fails when the name exists: one winner per generation
            return True
        except FileExistsError:
            return False
        finally:
            temp.unlink(missing_ok=True)

    def _stale(self, record: dict, path: Path, now: float) -> bool:
        # pids are checked on the machine this runs on, which for a Ray actor is not always the owner's
        pid = record.get("pid", -1)
        if record.get("host") == socket.gethostname() and not process_alive(pid if isinstance(pid, int) else -1):
            return True
        try:
            heartbeat = self._owner_file(str(record.get("owner"))).stat().st_mtime
        except FileNotFoundError:
            try:
                heartbeat = path.stat().st_mtime
            except FileNotFoundError:
                return False
        if heartbeat > now + CLOCK_SKEW:
            return True  # from the future: not a heartbeat anyone alive could have made
        return now - heartbeat > self.lease

    def describe_holders(self, video_ids: Sequence[str]) -> str:
        """Who holds these videos' claims, e.g. 'held by host-a pid 12 (3), host-b pid 9 (1)'."""
        listing = self._listing()
        counts: dict[str, int] = {}
        for video_id in video_ids:
            key = claim_key(video_id)
            record = self._read(key, max(listing[key])) if key in listing else None
            if record is not None:
                holder = f"{record.get('host', '?')} pid {record.get('pid', '?')}"
                counts[holder] = counts.get(holder, 0) + 1
        shown = ", ".join(f"{holder} ({n})" for holder, n in sorted(counts.items(), key=lambda kv: -kv[1])[:3])
        return f"held by {shown}" if shown else "claims just given back"

    def _read(self, key: str, generation: int) -> dict | None:
        try:
            record = read_json(self.root / f"{key}.{generation}.json")
        except (FileNotFoundError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _listing(self) -> dict[str, list[int]]:
        return claim_listing(self.root)

    def _generations(self, key: str) -> list[int]:
        return sorted(int(p.name.split(".")[1]) for p in self.root.glob(f"{key}.*.json"))

    # ---- holding and giving back ----------------------------------------------------------------
    def holds(self, video_id: str) -> bool:
        """Whether this writer still holds the newest claim on the video (no one took it over)."""
        key = claim_key(video_id)
        generations = self._generations(key)
        record = self._read(key, generations[-1]) if generations else None
        return record is not None and record.get("owner") == self.owner.token

    def release(self, video_ids: Sequence[str]) -> None:
        """Give back this writer's claims on these videos (after commit, failure, or when stopping)."""
        for video_id in video_ids:
            if self.holds(video_id):
                self._remove(claim_key(video_id))

    def forget(self, video_ids: Sequence[str]) -> None:
        """Remove every claim on these videos, whoever made it: they are committed, so no claim matters."""
        for video_id in video_ids:
            self._remove(claim_key(video_id))

    def _remove(self, key: str) -> None:
        # oldest first: while this runs, the newest generation still tells others who holds the video
        for generation in self._generations(key):
            (self.root / f"{key}.{generation}.json").unlink(missing_ok=True)

    def release_all(self) -> None:
        """Give back every claim this writer still holds."""
        for key, generations in self._listing().items():
            record = self._read(key, max(generations))
            if record is not None and record.get("owner") == self.owner.token:
                self._remove(key)

    def sort_out(self, video_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Split uncommitted videos into those this writer may take now (unclaimed, stale or its own) and
        those other live writers hold."""
        generations = self._listing()
        now = self.beat()
        takeable, held_by_others = [], []
        for video_id in video_ids:
            key = claim_key(video_id)
            found = generations.get(key)
            record = self._read(key, max(found)) if found else None
            if record is None or record.get("owner") == self.owner.token or \
                    self._stale(record, self.root / f"{key}.{max(found)}.json", now):
                takeable.append(video_id)
            else:
                held_by_others.append(video_id)
        return takeable, held_by_others

    def forget_committed(self) -> None:
        """Remove claims of committed videos (a writer that died between its commit and giving them back)."""
        listing = self._listing()
        committed = self.committed().refresh() if listing else set()
        for key, generations in listing.items():
            record = self._read(key, max(generations))
            if record is not None and record.get("video_id") in committed:
                self._remove(key)

    def tidy(self) -> None:
        """Remove claims of committed videos, owner files of writers that are gone, and temporary files of
        dead writers on this host."""
        self.forget_committed()
        now = self.beat()
        for path in (self.root / OWNERS_DIR).glob("*.json"):
            token = path.name[: -len(".json")]
            host, pid = _token_host_pid(token)
            if token != self.owner.token and self._stale({"owner": token, "host": host, "pid": pid}, path, now):
                path.unlink(missing_ok=True)
        for temp in self.root.glob(f"{TEMP_PREFIX}*"):
            host, pid = _token_host_pid(temp.name[len(TEMP_PREFIX):].rsplit("-", 1)[0])
            if host == self.owner.host and not process_alive(pid):
                temp.unlink(missing_ok=True)


def _token_host_pid(token: str) -> tuple[str, int]:
    """Host and pid of an owner token `host.pid.nonce` (host names may hold dots and dashes)."""
    parts = token.rsplit(".", 2)
    return (parts[0], int(parts[1])) if len(parts) == 3 and parts[1].isdigit() else ("", -1)


class _Heartbeat(threading.Thread):
    """Touches the owner file every quarter lease while the writer runs."""

    def __init__(self, claims: Claims) -> None:
        super().__init__(name="freezeframe-claims-heartbeat", daemon=True)
        self.claims = claims
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.claims.lease / 4):
            with contextlib.suppress(OSError):
                self.claims.beat()


@contextlib.contextmanager
def claiming(feature_set_dir: StorePath, lease: float = DEFAULT_LEASE) -> Iterator[Claims | None]:
    """Claims of a writer for the length of a run: heartbeat while it lasts, every claim given back after.

    Yields None for a remote (object-store) feature set, which has one writer at a time.
    """
    if is_remote(feature_set_dir):
        yield None
        return
    claims = Claims(Path(feature_set_dir), ClaimOwner.current(), lease)
    claims.register()
    heartbeat = _Heartbeat(claims)
    heartbeat.start()
    try:
        claims.tidy()
        yield claims
    finally:
        heartbeat.stopped.set()
        heartbeat.join()
        claims.release_all()
        claims.tidy()
        claims.unregister()


def forget_committed_claims(feature_set_dir: StorePath) -> None:
    """Remove claims left on committed videos, outside a run (e.g. when a rerun finds nothing to do)."""
    if not is_remote(feature_set_dir):
        Claims(Path(feature_set_dir), ClaimOwner.current()).forget_committed()


def claim_listing(root: Path) -> dict[str, list[int]]:
    """Claim key -> generations present in a claims folder, from one directory listing."""
    found: dict[str, list[int]] = {}
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(root):
            match = _CLAIM_NAME.match(entry.name)
            if match:
                found.setdefault(match.group(1), []).append(int(match.group(2)))
    return found


def claimed_videos(feature_set_dir: StorePath) -> int:
    """How many videos of a feature set are claimed (by running writers, or by crashed ones until a rerun)."""
    return 0 if is_remote(feature_set_dir) else len(claim_listing(Path(feature_set_dir) / CLAIMS_DIR))
