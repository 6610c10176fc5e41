"""Many writers on one store: claims make concurrent `freezeframe extract` processes store each video exactly once.

Real extraction processes on real sample videos with the bundled tiny model; claim files are inspected and,
to stand in for writers on other machines, made with another host name.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from faults import FEATURE_SET, VIDEOS, differences, extract_args, markers, run_extract, stored_counts
from freezeframe.cli import main
from freezeframe.store import FeatureSetWriter, open_store, verify_store
from freezeframe.store.claims import CLAIMS_DIR, OWNERS_DIR, ClaimOwner, Claims, claim_key, process_alive
from freezeframe.store.files import append_jsonl

ALL = sorted(p for p in VIDEOS.iterdir() if p.suffix in (".mp4", ".avi"))
IDS = [p.stem for p in ALL]


def extract_here(args: list[str]):
    return CliRunner().invoke(main, ["extract", *map(str, args)], catch_exceptions=False)


def summary(stdout: str) -> tuple[int, int, int]:
    """(stored, already committed, committed by other writers) from the extract command's last line."""
    match = re.search(r"stored (\d+) videos? \(\d+ frames?\) in [\d.]+s; (\d+) already committed; "
                      r"(?:(\d+) by other writers; )?store", stdout)
    assert match, stdout
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def claim_files(store: Path) -> list[Path]:
    root = store / FEATURE_SET / CLAIMS_DIR
    return sorted(p for p in root.glob("*.json")) if root.is_dir() else []


def assert_clean(store: Path, reference: Path, ids: list[str], killed: bool = False) -> None:
    """Each video once, verify without problems or warnings, arrays equal the reference, no claim left.
    After a kill, a shard renamed into place but never marked may be left (ignored, and reported)."""
    assert sorted(stored_counts(store).items()) == [(video_id, 1) for video_id in sorted(ids)]
    report = verify_store(store)
    warnings = [w for w in report.warnings if not (killed and "has no commit marker" in w)]
    assert report.ok and not warnings, (report.problems, report.warnings)
    assert differences(store, reference, ids) == []
    assert claim_files(store) == []
    assert list((store / FEATURE_SET / CLAIMS_DIR / OWNERS_DIR).iterdir()) == []


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One process, all eight sample videos."""
    store = tmp_path_factory.mktemp("reference") / "store"
    result = extract_here(extract_args(ALL, store, 1))
    assert result.exit_code == 0, result.output
    assert open_store(store)[FEATURE_SET].video_ids() == IDS
    return store


# ---- claims alone -------------------------------------------------------------------------------------------------

def _owner(host: str = "peer-host") -> ClaimOwner:
    return ClaimOwner(host, 4242, f"{host}.4242.{os.urandom(4).hex()}")


def test_claim_files_are_named_by_hash_and_each_video_has_one_holder(tmp_path):
    ids = [f"clip/{i}/../ü {i}" for i in range(60)]
    writers = [Claims(tmp_path, ClaimOwner("vm", os.getpid(), f"vm.{os.getpid()}.{i}")) for i in range(4)]
    for claims in writers:
        claims.register()
    with ThreadPoolExecutor(4) as pool:
        held = list(pool.map(lambda claims: claims.claim(ids), writers))
    assert sorted(v for got in held for v in got) == sorted(ids)  # every video held, by exactly one writer
    names = sorted(p.name for p in (tmp_path / CLAIMS_DIR).glob("*.json"))
    assert names == sorted(f"{claim_key(v)}.0.json" for v in ids)
    assert all("/" not in name and "clip" not in name for name in names)
    for claims, got in zip(writers, held):
        assert all(claims.holds(v) for v in got) and not any(claims.holds(v) for v in set(ids) - set(got))
    # a second round changes nothing: held videos stay with their holders
    assert [claims.claim(ids) for claims in writers] == held
    writers[0].release(held[0])
    assert writers[1].claim(ids) == sorted(set(held[0]) | set(held[1]), key=ids.index)


def test_live_claims_are_respected_until_the_lease_passes_then_one_taker_wins(tmp_path):
    peer = Claims(tmp_path, _owner(), lease=60)
    peer.register()
    assert peer.claim(["a", "b"]) == ["a", "b"]
    takers = [Claims(tmp_path, ClaimOwner.current(), lease=60) for _ in range(4)]
    for claims in takers:
        claims.register()
    assert [claims.claim(["a", "b"]) for claims in takers] == [[]] * 4
    assert takers[0].sort_out(["a", "b"]) == ([], ["a", "b"])

    owner_file = tmp_path / CLAIMS_DIR / OWNERS_DIR / f"{peer.owner.token}.json"
    old = time.time() - 61
    os.utime(owner_file, (old, old))  # the peer's heartbeat stopped a lease ago
    assert takers[0].sort_out(["a", "b"]) == (["a", "b"], [])
    with ThreadPoolExecutor(4) as pool:
        won = list(pool.map(lambda claims: claims.claim(["a", "b"]), takers))
    assert sorted(v for got in won for v in got) == ["a", "b"]
    assert sorted(p.name for p in (tmp_path / CLAIMS_DIR).glob("*.json")) == sorted(
        f"{claim_key(v)}.{g}.json" for v in "ab" for g in (0, 1))
    assert not peer.holds("a") and not peer.holds("b")
    peer.release(["a", "b"])  # the old holder cannot give back what it lost
    assert sum(claims.holds("a") for claims in takers) == 1


def test_a_dead_writer_on_this_host_loses_its_claims_at_once(tmp_path):
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(child.stdout)
    assert not process_alive(pid)
    dead = Claims(tmp_path, ClaimOwner(ClaimOwner.current().host, pid, f"{ClaimOwner.current().host}.{pid}.dead"))
    dead.register()
    assert dead.claim(["a"]) == ["a"]
    taker = Claims(tmp_path, ClaimOwner.current())  # default lease: two minutes, not waited for
    taker.register()
    assert taker.claim(["a"]) == ["a"] and taker.holds("a")
    taker.tidy()  # the dead writer's owner file goes; the live one's stays
    assert [p.name for p in (tmp_path / CLAIMS_DIR / OWNERS_DIR).iterdir()] == [f"{taker.owner.token}.json"]


def test_claiming_gives_back_videos_committed_meanwhile(tmp_path):
    writer = FeatureSetWriter(tmp_path, "fs", {"backbone": {"model": "x"}})
    shard = writer.new_shard()
    shard.append("a", {"x": np.zeros((2, 3), "float16")})
    shard.end_video("a")
    shard.commit()
    claims = Claims(writer.path, ClaimOwner.current())
    claims.register()
    assert claims.claim(["a", "b"]) == ["b"]
    assert [p.name for p in (writer.path / CLAIMS_DIR).glob("*.json")] == [f"{claim_key('b')}.0.json"]


# ---- real extraction processes ------------------------------------------------------------------------------------

def test_two_concurrent_extract_processes_store_each_video_once(reference, tmp_path):
    store = tmp_path / "store"
    first, second = ALL[:6], ALL[2:]  # four videos in both
    jobs = [extract_args(first, store, 1, "--workers", "0"), extract_args(second, store, 1, "--workers", "1")]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run_extract, jobs))
    for result in results:
        assert result.returncode == 0, result.stdout + result.stderr
    (stored_1, already_1, others_1), (stored_2, already_2, others_2) = (summary(r.stdout) for r in results)
    assert stored_1 + stored_2 == 8
    assert stored_1 + already_1 + others_1 == 6 and stored_2 + already_2 + others_2 == 6
    assert len(markers(store)) == 8
    assert_clean(store, reference, IDS)


def test_claims_of_a_sigkilled_writer_are_taken_over_by_the_next_run(reference, tmp_path):
    store = tmp_path / "store"
    inputs = ALL[:5]
    # dies just after claiming its third video, the first of its second shard (the first shard may or may not
    # be committed by then: writing runs behind decoding)
    killed = run_extract(extract_args(inputs, store, 2), fault="claim:3")
    assert killed.returncode == -9, killed.stderr
    committed = sorted(stored_counts(store))
    assert committed in ([], [p.stem for p in inputs[:2]])
    records = {r["video_id"]: r for r in (json.loads(p.read_text()) for p in claim_files(store))}
    assert inputs[2].stem in records and set(records) <= {p.stem for p in inputs[:3]}
    assert {(r["host"], process_alive(r["pid"])) for r in records.values()} == {(ClaimOwner.current().host, False)}
    report = verify_store(store)
    assert report.ok and any("claimed by writers that are running or crashed" in w for w in report.warnings)

    result = extract_here(extract_args(inputs, store, 2))
    assert result.exit_code == 0, result.output
    assert summary(result.output) == (5 - len(committed), len(committed), 0)
    assert_clean(store, reference, [p.stem for p in inputs], killed=True)


def test_a_run_waits_for_a_live_peer_and_leaves_its_video_to_it(reference, tmp_path):
    store, inputs = tmp_path / "store", ALL[:3]
    assert extract_here(extract_args(inputs[:1], store, 1)).exit_code == 0  # the feature set exists
    fs_dir = store / FEATURE_SET
    peer = Claims(fs_dir, _owner())  # a writer on another machine, heartbeating
    peer.register()
    assert peer.claim([inputs[2].stem]) == [inputs[2].stem]
    stop = threading.Event()

    def peer_works() -> None:
        while len(markers(store)) < 2 and not stop.wait(0.1):  # until the run committed what it could
            peer.beat()
        time.sleep(0.5)  # the run is waiting now
        append_jsonl(fs_dir / "failures.jsonl", {"video_id": inputs[2].stem, "path": str(inputs[2]),
                                                 "reason": "peer could not read it", "time": time.time()})
        peer.release([inputs[2].stem])

    thread = threading.Thread(target=peer_works)
    thread.start()
    try:
        result = extract_here(extract_args(inputs, store, 1))
    finally:
        stop.set()
        thread.join()
    assert result.exit_code == 0, result.output
    assert summary(result.output) == (1, 1, 0)  # the peer's video was neither taken nor stored
    assert sorted(stored_counts(store)) == sorted(p.stem for p in inputs[:2])
    assert claim_files(store) == []


def test_a_silent_peer_loses_its_claims_after_the_lease(reference, tmp_path):
    store, inputs = tmp_path / "store", ALL[:3]
    assert extract_here(extract_args(inputs[:1], store, 1)).exit_code == 0
    fs_dir = store / FEATURE_SET
    silent, stale = Claims(fs_dir, _owner("silent-host")), Claims(fs_dir, _owner("stale-host"))
    for peer, video in ((silent, inputs[1]), (stale, inputs[2])):
        peer.register()
        assert peer.claim([video.stem]) == [video.stem]
    owner_file = fs_dir / CLAIMS_DIR / OWNERS_DIR / f"{stale.owner.token}.json"
    os.utime(owner_file, (time.time() - 3600,) * 2)  # silent for an hour
    # the silent peer heartbeated just now: its video is taken once a one-second lease has passed
    result = extract_here([*extract_args(inputs, store, 1), "--claim-lease", "1"])
    assert result.exit_code == 0, result.output
    assert summary(result.output) == (2, 1, 0)
    assert not silent.holds(inputs[1].stem) and not stale.holds(inputs[2].stem)
    assert_clean(store, reference, [p.stem for p in inputs])


PEER = """
import sys, time
from pathlib import Path
from freezeframe.store.claims import ClaimOwner, Claims
claims = Claims(Path(sys.argv[1]), ClaimOwner.current())
claims.register()
assert claims.claim([sys.argv[2]]) == [sys.argv[2]]
print("claimed", flush=True)
while True:
    claims.beat()
    time.sleep(0.1)
"""


def test_a_peer_killed_while_the_run_waits_for_it_has_its_video_taken_over(reference, tmp_path):
    store, inputs = tmp_path / "store", ALL[:3]
    assert extract_here(extract_args(inputs[:1], store, 1)).exit_code == 0
    peer = subprocess.Popen([sys.executable, "-c", PEER, str(store / FEATURE_SET), inputs[2].stem],
                            stdout=subprocess.PIPE, text=True)
    assert peer.stdout.readline().strip() == "claimed"
    outcome = {}
    run = threading.Thread(target=lambda: outcome.update(result=extract_here(extract_args(inputs, store, 1))))
    run.start()
    try:
        deadline = time.monotonic() + 120
        while len(markers(store)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the run is waiting for the peer's video now
        assert run.is_alive()
        peer.kill()
        peer.wait()
    finally:
        peer.kill()
        run.join(timeout=120)
    result = outcome["result"]
    assert result.exit_code == 0, result.output
    assert summary(result.output) == (2, 1, 0)  # the dead peer's video was taken over and stored
    assert_clean(store, reference, [p.stem for p in inputs])
