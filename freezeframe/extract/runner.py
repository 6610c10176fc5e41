"""The extraction run: decode workers -> batched frozen forward -> background shard writer -> committed store."""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from freezeframe.errors import InputError, StoreError
from freezeframe.extract.augment import AugmentConfig, check_views, view_batching
from freezeframe.extract.backbones.base import Backbone
from freezeframe.extract.batching import FrameBatcher
from freezeframe.extract.decode import DECODERS, DEFAULT_MAX_PIXELS, DecodeOptions, check_decode_device
from freezeframe.extract.loader import Chunk, ChunkStream, DecodeSpec, Failure, Skipped
from freezeframe.extract.sampling import SEEK_MODES
from freezeframe.extract.workers import IDLE, DecodePool
from freezeframe.extract.preprocess import PreprocessConfig, check_fast_supported, fast_preprocess
from freezeframe.extract.sampling import SamplingConfig
from freezeframe.extract.sources import VideoSource, check_unique
from freezeframe.faults import fault_point
from freezeframe.printable import printable
from freezeframe.store import provenance as prov
from freezeframe.store.claims import DEFAULT_LEASE, Claims, claiming, forget_committed_claims
from freezeframe.store.files import read_jsonl
from freezeframe.store.writer import FeatureSetWriter
from freezeframe.views import view_array


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass(frozen=True)
class ExtractConfig:
    """How to run an extraction (what to compute is the backbone's own config)."""

    store: str
    name: str | None = None
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    decoder: str = "auto"
    preprocess: str = "exact"
    batch_size: int | None = None  # rows per backbone forward; None: 64 frames, or 8 windows
    workers: int = field(default_factory=default_workers)
    shard_size: int = 64
    device: str = "auto"
    format: str = "zarr"
    compression: str = "none"  # storage only: recorded per shard, not in provenance
    max_chunk_bytes: int = 64 * 1024 * 1024
    progress: bool = True
    claim_lease: float = DEFAULT_LEASE  # seconds a silent writer's claims stay valid (many writers on one store)
    seek: str = "exact"  # "keyframe": sampled frames snapped to their nearest keyframes
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger frames fail before decoding
    decode_timeout: float = 300.0  # seconds decoding may deliver nothing before its video fails (0: never)
    decode_device: str = "cpu"  # "cuda"/"cuda:N": NVDEC through torchcodec, frames resized on the GPU (fast mode)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # augmented views per frame (none by default)

    def __post_init__(self) -> None:
        if self.batch_size is None:
            object.__setattr__(self, "batch_size", 64 if self.sampling.frames_per_row == 1 else 8)
        if self.decoder not in DECODERS:
            raise InputError(f"unknown --decoder {self.decoder!r}; choose one of {', '.join(DECODERS)}.")
        if self.preprocess not in ("exact", "fast"):
            raise InputError(f"unknown --preprocess {self.preprocess!r}; choose exact or fast.")
        for key in ("batch_size", "shard_size"):
            if getattr(self, key) < 1:
                raise InputError(f"--{key.replace('_', '-')} must be at least 1.")
        if self.seek not in SEEK_MODES:
            raise InputError(f"unknown --seek {self.seek!r}; choose exact or keyframe.")
        if self.seek == "keyframe" and self.sampling.strategy not in ("num_frames", "fps"):
            raise InputError("--seek keyframe snaps sparse samples (--num-frames, --fps); clips and windows need "
                             "consecutive frames: use --seek exact.")
        check_views(self.augment, self.sampling.strategy, self.preprocess)
        if self.max_pixels < 1:
            raise InputError("--max-pixels must be at least 1.")
        if self.decode_timeout < 0:
            raise InputError("--decode-timeout must be 0 (no limit) or a positive number of seconds.")
        if self.workers < 0:
            raise InputError("--workers must be 0 (decode in the main process) or more.")
        if self.decode_device != "cpu":
            if self.preprocess != "fast":
                raise InputError(f"--decode-device {self.decode_device} resizes frames on the GPU: use it with "
                                 "--preprocess fast (exact mode is open_clip's PIL transform, on the CPU).")
            if self.decoder not in ("auto", "torchcodec"):
                raise InputError(f"--decode-device {self.decode_device} decodes with torchcodec (NVDEC): use "
                                 "--decoder auto or torchcodec.")
        check_decode_device(self.decode_device)
        if not self.claim_lease > 0:
            raise InputError("--claim-lease must be a positive number of seconds.")
        from freezeframe.store.backends import BACKENDS, COMPRESSIONS

        if self.format not in BACKENDS:
            raise InputError(f"unknown --format {self.format!r}; choose one of {', '.join(BACKENDS)}.")
        if self.compression not in COMPRESSIONS:
            raise InputError(f"unknown --compression {self.compression!r}; choose one of {', '.join(COMPRESSIONS)}.")


@dataclass
class ExtractionReport:
    store: str
    feature_set: str
    total: int
    skipped: int
    stored: int = 0
    frames: int = 0
    seconds: float = 0.0
    failures: list[dict] = field(default_factory=list)
    failures_path: str = ""
    by_others: int = 0  # videos of this run's inputs that other writers committed while it ran

    @property
    def ok(self) -> bool:
        return not self.failures


def sampling_provenance(config: ExtractConfig) -> dict:
    """How frames were chosen and decoded. Exact seeking and CPU decoding are recorded by omission, so sets written
    before --seek and --decode-device existed still take appends."""
    return {**config.sampling.describe(), "decoder": config.decoder,
            **({"seek": config.seek} if config.seek != "exact" else {}),
            **({"decode_device": config.decode_device} if config.decode_device != "cpu" else {})}


def augment_provenance(config: ExtractConfig) -> dict | None:
    """How augmented views were made; None without views (not recorded, so sets written before --views existed
    still take appends)."""
    return config.augment.describe() if config.augment.views else None


def feature_set_provenance(backbone: Backbone, config: ExtractConfig) -> dict:
    preprocess = replace(backbone.preprocess, mode=config.preprocess)
    provenance = {
        **backbone.provenance(),
        "preprocess": preprocess.describe(),
        "sampling": sampling_provenance(config),
        **({"augment": augment} if (augment := augment_provenance(config)) else {}),
    }
    return prov.stamp(provenance, "torch", "torchvision", "open_clip_torch", "av", "torchcodec", "decord")


class _ShardSink(threading.Thread):
    """Background writer: appends finished windows to their shard and commits each shard whole."""

    def __init__(self, writer: FeatureSetWriter, claims: Claims | None = None,
                 on_commit: Callable[[int], None] | None = None) -> None:
        super().__init__(name="freezeframe-writer", daemon=True)
        self.writer = writer
        self.claims = claims
        self.on_commit = on_commit  # called with a shard's video count once it is committed
        self.committed = 0
        self.inbox: queue.Queue = queue.Queue(maxsize=32)
        self.error: BaseException | None = None
        self._open: dict[int, object] = {}
        self.lost: list[str] = []  # videos another writer took over (this one was silent too long): not stored

    def run(self) -> None:
        while True:
            op = self.inbox.get()
            if op is None:
                return
            if self.error is not None:
                continue  # drain after a failure so the producer never blocks
            try:
                self._handle(*op)
            except BaseException as exc:  # noqa: BLE001 - surfaced to the main thread
                self.error = exc

    def _handle(self, kind: str, shard: int, payload) -> None:
        if kind == "append":
            video_id, arrays, last, info = payload
            sink = self._open.get(shard)
            if sink is None:
                sink = self._open[shard] = self.writer.new_shard()
            sink.append(video_id, arrays)
            fault_point("chunk")
            if last:
                if self.claims is not None and not self.claims.holds(video_id):
                    sink.discard_video(video_id)
                    self.lost.append(video_id)
                else:
                    sink.end_video(video_id, info)
        elif kind == "fail":
            failure: Failure = payload
            if shard in self._open:
                self._open[shard].discard_video(failure.video_id)
            self.writer.record_failure(failure.video_id, failure.path, failure.reason)
            if self.claims is not None:
                self.claims.release([failure.video_id])
        elif kind == "end":
            sink = self._open.pop(shard, None)
            if sink is not None:
                if sink.num_videos:
                    try:
                        sink.commit()
                    except BaseException:
                        sink.abort()  # popped from _open already: nobody else would remove its temporary
                        raise
                    fault_point("committed")
                    if self.claims is not None:
                        self.claims.release([video["id"] for video in sink.videos])
                    self.committed += sink.num_videos
                    if self.on_commit is not None:
                        self.on_commit(sink.num_videos)
                else:
                    sink.abort()

    def abort_open(self) -> None:
        for sink in self._open.values():
            sink.abort()
        self._open.clear()


def run_extraction(sources: Sequence[VideoSource], backbone: Backbone, config: ExtractConfig,
                   extract_pass: Callable | None = None) -> ExtractionReport:
    """Extract features of every source not yet committed; failures are recorded and the rest goes on.

    Many processes may run this on one store at once: each claims the videos it extracts, skips those that
    others hold, and at the end waits for those (taking over the claims of writers that died).
    `extract_pass` does one pass over the videos left (default: in this process; the Ray engine fans out).
    """
    extract_pass = extract_pass or _extract_pass
    check_inputs(sources)
    windows = config.sampling.strategy == "windows"
    if windows != backbone.takes_windows:
        raise InputError(f"the {backbone.kind} backbone takes " + (
            "windows of frames: sample with --window-frames/--window-stride at --fps." if backbone.takes_windows
            else "single frames: sample with --num-frames, --fps or --clips, not windows."))
    if windows:
        backbone.check_window(config.sampling.window_frames, *backbone.preprocess.size)
    if config.preprocess == "fast":
        check_fast_supported(backbone.preprocess)
    name = config.name or backbone.config.default_name()
    try:
        writer = FeatureSetWriter(config.store, name, feature_set_provenance(backbone, config), format=config.format,
                                  compression=config.compression, frozen=backbone.frozen_weights() or None)
        todo = videos_left(sources, writer)
        report = ExtractionReport(config.store, name, total=len(sources), skipped=len(sources) - len(todo),
                                  failures_path=str(writer.failures_path))
        if not todo:
            forget_committed_claims(writer.path)
            writer.write_index()
            return report
        start, started = time.perf_counter(), time.time()
        with claiming(writer.path, config.claim_lease) as claims:
            pending = todo
            while pending:
                extract_pass(pending, backbone, config, writer, claims, report)
                pending = _unfinished(todo, claims, writer, report, started, config.progress) if claims else []
            if claims is not None:
                done = claims.committed().refresh()
                report.by_others = sum(s.video_id in done for s in todo) - report.stored
                writer.remove_stale_temps()  # those of writers that died while this one ran
        fault_point("index")
        writer.write_index()
    except OSError as exc:
        reason = exc.strerror or str(exc).splitlines()[0]
        raise StoreError(f"writing to store {config.store} failed ({reason}); what was committed is kept, and a "
                         "rerun finishes the rest once the cause (disk space, quota, file size limit) is fixed.") from exc
    report.seconds = time.perf_counter() - start
    return report


def videos_left(sources: Sequence[VideoSource], writer: FeatureSetWriter) -> list[VideoSource]:
    """The sources whose videos are not committed yet, in input order: a rerun's work (at a million videos, a
    second or so: committed ids come from the memory-mapped index)."""
    committed = writer.committed_ids()
    return [s for s in sources if s.video_id not in committed]


# ---- input and usage checks: cheap, before any model loads or anything is written ---------------------------

def check_inputs(sources: Sequence[VideoSource]) -> None:
    """No videos is an error (a run that would create and lock an empty feature set); ids must be unique."""
    if not sources:
        raise InputError("no videos to extract: the inputs name no video files (an empty folder or list?); "
                         "nothing was created.")
    check_unique(sources)


def check_store(store: str, name: str | None = None, config: ExtractConfig | None = None) -> None:
    """Fail before the model loads when STORE cannot take this run: a file, another store schema, or a feature set
    `name` whose recorded sampling or preprocessing mode differs from `config`'s (the rest needs the model)."""
    from freezeframe.store.files import read_json
    from freezeframe.store.layout import PROVENANCE_FILE
    from freezeframe.store.location import is_remote, store_path
    from freezeframe.store.store import check_schema

    path = store_path(store)
    if is_remote(path):
        return  # checked when the writer opens it
    if path.exists() and not path.is_dir():
        raise StoreError(f"--store {store} is a file, not a store directory.")
    if path.is_dir() and any(path.iterdir()):
        check_schema(path)
    if name is None or config is None or not (path / name / PROVENANCE_FILE).is_file():
        return
    stored = read_json(path / name / PROVENANCE_FILE)
    ours = {"sampling": sampling_provenance(config), "preprocess": {"mode": config.preprocess},
            "augment": augment_provenance(config)}
    theirs = {"sampling": stored.get("sampling"), "preprocess": {"mode": (stored.get("preprocess") or {}).get("mode")},
              "augment": stored.get("augment")}
    prov.refuse_append(name, store, prov.differences(theirs, ours))


@dataclass
class ExtractionPlan:
    """What `run_extraction` would do (`extract --dry-run`): nothing is decoded or written to find it out."""

    store: str
    feature_set: str
    total: int
    todo: list[str]
    committed: list[str]
    shards: list[int]  # videos per shard to write
    arrays: dict[str, dict]  # name -> {"shape": per-row dims, "dtype"}
    rows_per_video: str  # e.g. "8 frames" or "1 row per 0.5 s of video"
    provenance_problem: str | None = None  # why appending would be refused, or None


def plan_extraction(sources: Sequence[VideoSource], backbone: Backbone, config: ExtractConfig) -> ExtractionPlan:
    """The extraction `run_extraction` would run, found by reading the store and one forward of a blank input."""
    from freezeframe.store.feature_set import FeatureSet
    from freezeframe.store.files import read_json
    from freezeframe.store.layout import PROVENANCE_FILE
    from freezeframe.store.location import store_path

    check_inputs(sources)
    check_store(config.store)
    name = config.name or backbone.config.default_name()
    fs_dir = store_path(config.store) / name
    committed: set[str] = set()
    problem = None
    if (fs_dir / PROVENANCE_FILE).is_file():
        committed = set(FeatureSet(store_path(config.store), name).video_ids())
        diffs = prov.differences(prov.identity(read_json(fs_dir / PROVENANCE_FILE)),
                                 prov.identity(feature_set_provenance(backbone, config)))
        problem = "; ".join(diffs[:4]) or None
    todo = [s for s in sources if s.video_id not in committed]
    shards = [len(shard) for shard in split_shards(todo, config.shard_size, config.workers)]
    return ExtractionPlan(config.store, name, len(sources), [s.video_id for s in todo],
                          sorted(s.video_id for s in sources if s.video_id in committed), shards,
                          _array_shapes(backbone, config), _rows_per_video(config.sampling), problem)


def _array_shapes(backbone: Backbone, config: ExtractConfig) -> dict[str, dict]:
    """Per-row shapes of every stored array, from one forward of a blank input."""
    height, width = backbone.preprocess.size
    window = (config.sampling.window_frames,) if backbone.takes_windows else ()
    blank = torch.zeros((1, *window, 3, height, width), device=backbone.device)
    with torch.no_grad():
        outputs = backbone(blank)
    arrays = {view_array(v, key): {"shape": list(value.shape[1:]), "dtype": "float16"}
              for key, value in outputs.items() for v in range(config.augment.views + 1)}
    arrays["timestamps"] = {"shape": [], "dtype": "float64"}
    arrays["frame_indices"] = {"shape": [config.sampling.frames_per_row] if backbone.takes_windows else [],
                               "dtype": "int64"}
    return arrays


def _rows_per_video(sampling: SamplingConfig) -> str:
    strategy = sampling.strategy
    if strategy == "num_frames":
        return f"{sampling.num_frames} frames"
    if strategy == "clips":
        return f"{sampling.clips * sampling.frames_per_clip} frames ({sampling.clips} clips of {sampling.frames_per_clip})"
    if strategy == "windows":
        return (f"one row per window of {sampling.window_frames} frames every {sampling.window_stride} "
                f"at {sampling.fps:g} fps (depends on its length)")
    return f"{sampling.fps:g} frames per second of video (depends on its length)"


def _unfinished(todo: Sequence[VideoSource], claims: Claims, writer: FeatureSetWriter, report: ExtractionReport,
                started: float, progress: bool) -> list[VideoSource]:
    """This run's videos that no writer has committed or failed yet and that this one may take now (unclaimed,
    or claimed by a writer that died); waits while other live writers hold all of them. [] when all are done."""
    failed_here = {failure["video_id"] for failure in report.failures}
    waiting_shown = False
    while True:
        committed = claims.committed().refresh()
        failed = failed_here | {r.get("video_id") for r in read_jsonl(writer.failures_path) if r.get("time", 0) >= started}
        left = [s for s in todo if s.video_id not in committed and s.video_id not in failed]
        if not left:
            return []
        takeable, held_by_others = claims.sort_out([s.video_id for s in left])
        if takeable:
            chosen = set(takeable)
            return [s for s in left if s.video_id in chosen]
        if progress and not waiting_shown:
            tqdm.write(printable(f"waiting for {len(held_by_others)} videos that other writers are extracting "
                                 f"({claims.describe_holders(held_by_others)})"))
            waiting_shown = True
        time.sleep(min(2.0, claims.lease / 4))


def _extract_pass(todo: Sequence[VideoSource], backbone: Backbone, config: ExtractConfig,
                  writer: FeatureSetWriter, claims: Claims | None, report: ExtractionReport) -> None:
    """One pass over `todo`: claim, decode, forward and commit shard by shard; adds to `report`."""
    # --shard-size is an upper bound: a run with fewer videos than workers x shard size uses smaller shards, so
    # that every decode worker (each decodes whole shards) has work; large runs keep full shards
    extract_shards(split_shards(todo, config.shard_size, config.workers), backbone, config, writer, claims, report)


def split_shards(todo: Sequence[VideoSource], shard_size: int, workers: int) -> list[list[VideoSource]]:
    """Shards of at most `shard_size` videos, smaller when there are too few videos for every worker to get one."""
    size = max(1, min(shard_size, -(-len(todo) // max(1, workers))))
    return [list(todo[i:i + size]) for i in range(0, len(todo), size)]


def decode_spec(config: ExtractConfig, preprocess: PreprocessConfig) -> DecodeSpec:
    """What the decode stage of `config` does for a backbone that takes `preprocess`: in fast mode readers resize
    frames to its short side as they decode them."""
    preprocess = replace(preprocess, mode=config.preprocess)
    fast = {"short_side": preprocess.size[0], "interpolation": preprocess.interpolation} if \
        config.preprocess == "fast" else {}
    options = DecodeOptions(max_pixels=config.max_pixels, device=config.decode_device, **fast)
    return DecodeSpec(config.sampling, preprocess, config.decoder, config.max_chunk_bytes, config.seek, options,
                      config.augment)


def extract_shards(shards: Sequence[Sequence[VideoSource]], backbone: Backbone, config: ExtractConfig,
                   writer: FeatureSetWriter, claims: Claims | None, report: ExtractionReport) -> None:
    """Decode, forward and commit the given shards in this process (decode workers: `config.workers`); adds to
    `report`. Both engines run this: locally over all shards, on Ray once per shard inside an actor."""
    todo = [source for shard in shards for source in shard]
    spec = decode_spec(config, backbone.preprocess)
    workers = min(config.workers, len(shards))
    # decode workers: a stalled or dead worker costs only its video; --workers 0 decodes here, under a time limit
    loader = DecodePool(shards, spec, claims, workers, config.decode_timeout) if workers else \
        ChunkStream(shards, spec, claims, config.decode_timeout)
    device = backbone.device
    batcher = FrameBatcher(*view_batching(config.batch_size, backbone, config.augment))
    # the bar counts videos done: committed (with their shard), failed or held by another writer
    bar = tqdm(total=len(todo), unit="video", disable=not config.progress, dynamic_ncols=True, smoothing=0.1)
    sink = _ShardSink(writer, claims, on_commit=bar.update)
    sink.start()
    start = time.perf_counter()
    shown = [0.0]  # when the bar was last redrawn

    def show(activity: str) -> None:
        """Keep the bar alive while a long video decodes or decoders wait (at most twice a second)."""
        now = time.perf_counter()
        waiting = report.stored - sink.committed
        bar.set_postfix_str(f"{report.frames / max(now - start, 1e-9):.1f} frames/s, {waiting} awaiting commit, "
                            f"{len(report.failures)} failed; {activity}", refresh=now - shown[0] > 0.5)
        if now - shown[0] > 0.5:
            shown[0] = now

    def dispatch(item, arrays: dict[str, np.ndarray]) -> None:
        if isinstance(item, Chunk):
            arrays["timestamps"] = item.timestamps.astype(np.float64)
            arrays["frame_indices"] = item.frame_indices.astype(np.int64)
            sink.inbox.put(("append", item.shard, (item.video_id, arrays, item.last, item.info)))
            report.frames += item.frame_indices.size
            if item.last:
                report.stored += 1
            show(f"at {item.video_id} {float(item.timestamps[-1]):.0f}s" if item.timestamps.size else item.video_id)
        elif isinstance(item, Failure):
            sink.inbox.put(("fail", item.shard, item))
            report.failures.append({"video_id": item.video_id, "path": item.path, "reason": item.reason})
            bar.update(1)
        elif isinstance(item, Skipped):
            bar.update(1)  # another writer holds it; the end of the run waits for it
        else:
            sink.inbox.put(("end", item.shard, None))

    try:
        for item in loader:
            if sink.error is not None:
                raise sink.error
            if item is IDLE:  # decoders are slow right now: compute what waits, so finished videos commit
                for finished, arrays in batcher.flush():
                    dispatch(finished, arrays)
                show("decoding")
                continue
            pixels = None
            if isinstance(item, Chunk):
                pixels = item.frames
                if spec.preprocess.mode == "fast":  # windows (n, T, h, w, 3) are cropped as n * T frames
                    frames = pixels.to(device, non_blocking=True)
                    pixels = fast_preprocess(frames.flatten(0, -4), spec.preprocess).unflatten(0, frames.shape[:-3])
                item.frames = None
            for finished, arrays in batcher.put(item, pixels):
                dispatch(finished, arrays)
        for finished, arrays in batcher.flush():
            dispatch(finished, arrays)
        sink.inbox.put(None)
        sink.join()
        if sink.error is not None:
            raise sink.error
        report.stored -= len(sink.lost)
    except BaseException:
        sink.inbox.put(None)
        sink.join(timeout=60)
        sink.abort_open()
        raise
    finally:
        bar.close()
