"""The Ray engine (`freezeframe extract --engine ray`): shard specs fanned out to Ray Data actors.

Each actor builds the backbone once from its (picklable) config, then per shard spec re-checks which of its
videos are committed (an earlier attempt may have committed before it died), extracts the rest in-process with
the local engine's `extract_shards`, commits whole shards to the shared store and returns a small summary.
The driver alone writes metadata: provenance and frozen weights before any work, failures.jsonl from the
summaries, and index.json at the end. A shard half-written by a killed attempt is an uncommitted temporary,
invisible to readers and removed by the next writer on its host.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
from tqdm import tqdm

from freezeframe.errors import BackboneError, FreezeframeError, InputError, StoreError
from freezeframe.extract.backbones import BackboneConfig, build_backbone
from freezeframe.extract.backbones.base import Backbone
from freezeframe.extract.runner import (
    ExtractConfig, ExtractionReport, extract_shards, feature_set_provenance, run_extraction, split_shards,
)
from freezeframe.extract.sources import VideoSource
from freezeframe.store.claims import Claims, CommittedVideos
from freezeframe.store.location import is_url
from freezeframe.store.writer import FeatureSetWriter


class WorkerError(FreezeframeError):
    """Ray actors kept dying (killed, out of memory, crashed) beyond the restart limit."""


@dataclass(frozen=True)
class RayConfig:
    """Where and how wide to run: the cluster, the number of actors and what each one reserves."""

    address: str | None = None  # None: RAY_ADDRESS or a new local cluster; "auto": the cluster on this node
    workers: int | None = None  # actors [default: GPUs // gpus_per_worker, or CPUs // 2 on a CPU cluster]
    gpus_per_worker: float | None = None  # [default: 1 when the cluster has GPUs, else 0]
    cpus_per_worker: float = 1.0
    max_restarts: int = 3  # times a dead actor is restarted (set explicitly; Ray Data's default is forever)
    max_task_retries: int = 3  # times a shard whose actor died is retried on a restarted one
    runtime_env: dict | None = None  # Ray runtime environment of the actors (env vars, pip packages, ...)

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise InputError("--ray-workers must be at least 1.")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise InputError("--gpus-per-worker must be 0 (CPU actors) or more, e.g. 1 or 0.5.")
        if self.cpus_per_worker <= 0 or self.max_restarts < 0 or self.max_task_retries < 0:
            raise InputError("cpus_per_worker must be positive and max_restarts, max_task_retries 0 or more.")


@dataclass(frozen=True)
class ShardJob:
    """Everything an actor needs, picklable: the backbone's config (never a model), the run's settings, the
    feature set, and the driver's claims (None on a remote store)."""

    backbone: BackboneConfig
    config: ExtractConfig
    feature_set: str
    device: str
    claims: Claims | None = field(default=None, compare=False)


class _ActorWriter(FeatureSetWriter):
    """The feature-set writer inside an actor: commits shards; failures go back in the summary for the driver."""

    def record_failure(self, video_id: str, path: str, reason: str) -> None:
        """Not written here: the driver records every failure from the summaries."""


class ShardExtractor:
    """A Ray Data actor: loads the backbone once, then extracts one shard spec per call and returns its summary."""

    def __init__(self, job: ShardJob) -> None:
        self.job = job
        self.error: dict | None = None  # a user-facing error of the setup, returned for every shard
        try:
            self.backbone = build_backbone(job.backbone, device=job.device)
            config = job.config
            # the feature set exists (the driver made it); this refuses a node whose software computes differently
            self.writer = _ActorWriter(config.store, job.feature_set, feature_set_provenance(self.backbone, config),
                                       format=config.format, compression=config.compression)
            self.committed = CommittedVideos(self.writer.path)
        except (FreezeframeError, OSError) as exc:
            self.error = _error_record(exc)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        summaries = [json.dumps(self.extract(json.loads(spec))) for spec in batch["spec"]]
        return {"summary": np.array(summaries, dtype=object)}

    def extract(self, spec: dict) -> dict:
        """Extract the shard's videos not committed yet; summary: stored ids, frames, failures (or the error that
        stopped it, returned rather than raised so that the driver can tell it in one sentence)."""
        if self.error is None:
            try:
                return self._extract(spec)
            except (FreezeframeError, OSError) as exc:
                return {"shard": spec["shard"], "error": _error_record(exc)}
        return {"shard": spec["shard"], "error": self.error}

    def _extract(self, spec: dict) -> dict:
        sources = [VideoSource(video_id, path) for video_id, path in spec["videos"]]
        before = self.committed.refresh()
        todo = [source for source in sources if source.video_id not in before]
        report = ExtractionReport(self.job.config.store, self.job.feature_set, total=len(todo), skipped=0)
        if todo:
            extract_shards([todo], self.backbone, self.job.config, self.writer, self.job.claims, report)
        done = self.committed.refresh()
        # a retried shard counts what its dead attempt committed too: the driver dispatched only uncommitted videos
        return {"shard": spec["shard"], "videos": len(sources), "stored": [s.video_id for s in sources
                                                                           if s.video_id in done],
                "frames": report.frames, "failures": report.failures}


def run_ray_extraction(sources: Sequence[VideoSource], backbone_config: BackboneConfig, config: ExtractConfig,
                       ray_config: RayConfig = RayConfig()) -> ExtractionReport:
    """Extract on a Ray cluster: same store, same arrays and same resume and claims rules as `run_extraction`."""
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        # the terminal shows our progress bar and errors; Ray's own notices stay in its session logs
        ray.init(address=ray_config.address, include_dashboard=False, log_to_driver=True,
                 logging_level=logging.ERROR)
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        resources = ray.cluster_resources()
        gpus = ray_config.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if resources.get("GPU", 0) > 0 else 0.0
        workers = ray_config.workers or (int(resources.get("GPU", 0) // gpus) if gpus else
                                         int(resources.get("CPU", 1) // 2)) or 1
        if gpus > resources.get("GPU", 0):  # not an error: an autoscaling cluster adds GPU nodes on demand
            tqdm.write(f"the Ray cluster has {resources.get('GPU', 0):g} GPUs now; actors wait for nodes with "
                       f"{gpus:g} free (pass --gpus-per-worker 0 for CPU actors)", file=sys.stderr)
        device = "cuda" if gpus > 0 else "cpu"
        if getattr(backbone_config, "precision", None) == "auto":  # as the actors' device resolves it
            backbone_config = replace(backbone_config, precision="fp16" if device == "cuda" else "fp32")
        # the driver builds the backbone on its CPU only for what it writes before work starts: provenance and
        # frozen weights; it never runs it
        driver_backbone = build_backbone(backbone_config, device="cpu")
        engine = _RayPass(ray, backbone_config, replace(ray_config, workers=workers, gpus_per_worker=gpus), device)
        return run_extraction(sources, driver_backbone, config, extract_pass=engine)
    finally:
        if started_here:
            ray.shutdown()


@dataclass
class _RayPass:
    """One pass of `run_extraction` over the videos left, on Ray: shard specs out, summaries in."""

    ray: object
    backbone_config: BackboneConfig
    ray_config: RayConfig
    device: str

    def __call__(self, todo: Sequence[VideoSource], backbone: Backbone, config: ExtractConfig,
                 writer: FeatureSetWriter, claims: Claims | None, report: ExtractionReport) -> None:
        from ray.data import ActorPoolStrategy, DataContext

        rc = self.ray_config
        # actors may run elsewhere (other nodes, another working directory): local paths go out absolute
        specs = [{"spec": json.dumps({"shard": i, "videos": [[s.video_id, _absolute(s.path)] for s in shard]})}
                 for i, shard in enumerate(split_shards(todo, config.shard_size, rc.workers))]
        # inside an actor one shard at a time: at most one decode process, overlapping the forward
        actor_config = replace(config, store=_absolute(config.store), workers=min(config.workers, 1), progress=False)
        job = ShardJob(self.backbone_config, actor_config, writer.name, self.device, claims)
        DataContext.get_current().enable_progress_bars = False  # the driver's own bar counts videos
        with warnings.catch_warnings():  # Ray 2.60 takes restart limits only as (deprecated) remote args
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            summaries = self.ray.data.from_items(specs, override_num_blocks=len(specs)).map_batches(
                ShardExtractor, fn_constructor_kwargs={"job": job}, batch_size=1,
                compute=ActorPoolStrategy(size=min(rc.workers, len(specs))), num_gpus=rc.gpus_per_worker or None,
                num_cpus=rc.cpus_per_worker, runtime_env=rc.runtime_env,
                max_restarts=rc.max_restarts, max_task_retries=rc.max_task_retries)
        bar = tqdm(total=len(todo), unit="video", disable=not config.progress, dynamic_ncols=True, smoothing=0.1)
        try:
            for row in summaries.iter_rows():
                summary = json.loads(row["summary"])
                if "error" in summary:
                    raise _rebuilt(summary["error"])
                for failure in summary["failures"]:
                    writer.record_failure(failure["video_id"], failure["path"], failure["reason"])
                    report.failures.append(failure)
                report.stored += len(summary["stored"])
                report.frames += summary["frames"]
                bar.update(summary["videos"])
                bar.set_postfix_str(f"{len(report.failures)} failed", refresh=False)
        except self.ray.exceptions.RayActorError as exc:
            raise WorkerError(f"a Ray actor died {rc.max_restarts + 1} times while extracting shards (killed, out of "
                              "memory, or crashed; see the Ray logs); what was committed is kept, and a rerun "
                              "finishes the rest.") from exc
        finally:
            bar.close()


def _error_record(exc: BaseException) -> dict:
    """A user-facing error or OSError of an actor, as plain data for its summary."""
    if isinstance(exc, OSError):
        return {"type": "OSError", "errno": exc.errno, "message": exc.strerror or str(exc).splitlines()[0]}
    return {"type": type(exc).__name__, "message": str(exc)}


def _rebuilt(record: dict) -> Exception:
    """The driver's copy of an actor's error: an OSError (reported as run_extraction reports store writes that
    fail) or the freezeframe error of the same class."""
    if record["type"] == "OSError":
        return OSError(record["errno"], record["message"])
    kinds = {kind.__name__: kind for kind in (InputError, StoreError, BackboneError)}
    return kinds.get(record["type"], FreezeframeError)(record["message"])


def _absolute(location: str) -> str:
    """A local path made absolute; a URL (s3://...) as it is."""
    return location if is_url(location) else os.path.abspath(location)


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError("--engine ray needs Ray Data: pip install 'freezeframe[ray]' (or 'ray[data]').") from None
    return ray
