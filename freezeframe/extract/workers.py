"""Decode worker processes that one bad input cannot stall or kill: a stalled or dead worker costs its video only.

Each worker decodes whole shards it is handed over its own pipe and reports which video it is on. A worker
that delivers nothing for `timeout` seconds is killed; a worker that dies (OOM killer, segfault) or is killed
gets its video recorded as a failure, a fresh worker is started, and the rest of its shard is decoded again
by whichever worker is free. The main process keeps batching the others' frames meanwhile, and hears `IDLE`
when nothing arrived for a moment (so it can flush partial batches: no video waits on a slow one).
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Iterator

import torch

from freezeframe.extract.loader import Chunk, ChunkStream, DecodeSpec, Failure, Item, ShardEnd, Skipped
from freezeframe.extract.sources import VideoSource
from freezeframe.store.claims import Claims

IDLE = "idle"  # yielded when no worker delivered anything for IDLE_AFTER seconds
IDLE_AFTER = 0.25
MAX_DEATHS_WITHOUT_A_VIDEO = 2  # a worker that keeps dying before it opens any video is a bug, not an input


@dataclass
class _Task:
    shard: int
    sources: list[VideoSource]
    claim: bool  # False once the worker has claimed the shard's videos (a redo must not claim them again)
    done: set[str] = field(default_factory=set)  # videos finished (stored, failed or skipped)
    deaths: int = 0


@dataclass
class _Worker:
    process: mp.process.BaseProcess
    conn: Connection
    task: _Task | None = None
    video: VideoSource | None = None  # the video it is decoding now
    heard: float = 0.0  # when it last delivered something


def _worker_main(conn: Connection, spec: DecodeSpec, claims: Claims | None) -> None:
    """A decode worker process: decodes on a thread of its own, never on the main thread a fork inherits.

    A library's per-thread state came along with that thread: PyAV (18.1.1 on) keeps one swscale context per
    thread, and the one the parent's main thread used (any decode there, before the fork) owns helper threads
    that do not exist in the child, so converting a frame with it, or freeing it, hangs for good. A new thread
    starts without it; the inherited one is never touched (the worker ends with os._exit, freeing nothing).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    torch.set_num_threads(1)  # workers share the cores; one thread each avoids oversubscription
    raised: list[BaseException] = []

    def decode() -> None:
        try:
            _decode_loop(conn, spec, claims)
        except BaseException as exc:  # noqa: BLE001 - raised again on the main thread: the worker dies of it
            raised.append(exc)

    thread = threading.Thread(target=decode, name="freezeframe-decode")
    thread.start()
    thread.join()
    if raised:
        raise raised[0]


def _decode_loop(conn: Connection, spec: DecodeSpec, claims: Claims | None) -> None:
    """Shards in, ("claimed" | "start" | "item", payload) messages out; None ends it."""
    stream = ChunkStream([], spec)
    preprocess = stream.preprocessor()
    while (task := conn.recv()) is not None:
        shard, sources, claim = task
        if claim and claims is not None:
            held = set(claims.claim([source.video_id for source in sources]))
            for source in sources:
                if source.video_id not in held:
                    conn.send(("item", Skipped(shard, source.video_id)))
            sources = [source for source in sources if source.video_id in held]
        conn.send(("claimed", None))
        for source in sources:
            conn.send(("start", source.video_id))
            for item in stream.video_items(shard, source, preprocess):
                if isinstance(item, Chunk):
                    item.frames = item.frames.numpy()  # by value: never a shared-memory handle a dead sender owns
                conn.send(("item", item))
        conn.send(("item", ShardEnd(shard)))


def _cuda_context() -> mp.context.BaseContext:
    """Workers that decode on CUDA cannot be forked from a process that uses CUDA: they are forked from a fresh
    server process instead, which imports this module and torchcodec once, so each worker still starts at once."""
    context = mp.get_context("forkserver")
    context.set_forkserver_preload([__name__, "torchcodec.decoders"])  # a module missing here is skipped
    return context


class DecodePool:
    """Iterate decode items (Chunk, Failure, Skipped, ShardEnd) or IDLE from `workers` supervised processes."""

    def __init__(self, shards: list[list[VideoSource]], spec: DecodeSpec, claims: Claims | None, workers: int,
                 timeout: float) -> None:
        self.spec, self.claims, self.timeout = spec, claims, timeout
        self._todo = [_Task(i, list(shard), claim=True) for i, shard in enumerate(shards)]
        self._context = mp.get_context("fork") if spec.options.device == "cpu" else _cuda_context()
        self._count = workers
        self._workers: list[_Worker] = []
        self.replaced = 0  # workers killed or dead and replaced (for reports and tests)

    def _start_worker(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_worker_main, args=(child, self.spec, self.claims), daemon=True,
                                        name="freezeframe-decode")
        process.start()
        child.close()  # only the worker holds its end: its death reads as EOF here
        return _Worker(process, parent)

    def __iter__(self) -> Iterator[Item | str]:
        try:
            self._workers = [self._start_worker() for _ in range(min(self._count, len(self._todo)))]
            yield from self._run()
        finally:
            self._stop()

    def _run(self) -> Iterator[Item | str]:
        while True:
            for worker in self._workers:
                if worker.task is None and self._todo:
                    worker.task = self._todo.pop(0)
                    worker.heard = time.monotonic()
                    worker.conn.send((worker.task.shard, self._left(worker.task), worker.task.claim))
            busy = [worker for worker in self._workers if worker.task is not None]
            if not busy:
                return
            ready = wait([worker.conn for worker in busy], timeout=IDLE_AFTER)
            if not ready:
                yield IDLE
            for worker in busy:
                if worker.conn in ready:
                    yield from self._receive(worker)
                elif self.timeout and time.monotonic() - worker.heard > self.timeout:
                    yield from self._replace(worker, f"decoding stalled: nothing decoded for {self.timeout:g} s "
                                                     "(--decode-timeout); the decode worker was killed")

    def _receive(self, worker: _Worker) -> Iterator[Item]:
        try:
            kind, payload = worker.conn.recv()
        except (EOFError, OSError, Exception):  # noqa: BLE001 - dead sender: EOF, or a message cut short
            yield from self._replace(worker, None)
            return
        worker.heard = time.monotonic()
        task = worker.task
        if kind == "claimed":
            task.claim = False
        elif kind == "start":
            worker.video = next(source for source in task.sources if source.video_id == payload)
        elif isinstance(payload, ShardEnd):
            worker.task = worker.video = None
            yield payload
        else:
            if isinstance(payload, Chunk):
                payload.frames = torch.from_numpy(payload.frames)
            if isinstance(payload, (Failure, Skipped)) or (isinstance(payload, Chunk) and payload.last):
                task.done.add(payload.video_id)
                worker.video = None
            yield payload

    def _replace(self, worker: _Worker, reason: str | None) -> Iterator[Item]:
        """Kill (if alive) and replace `worker`; its video fails, the rest of its shard goes back to the queue."""
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join()
        worker.conn.close()
        task, video = worker.task, worker.video
        if reason is None:
            code = worker.process.exitcode
            how = f"exit status {code}" if code is None or code >= 0 else \
                "killed by SIGKILL, e.g. by the out-of-memory killer" if code == -signal.SIGKILL else \
                f"killed by signal {-code}"
            reason = f"the decode worker died while decoding this video ({how})"
        self._workers[self._workers.index(worker)] = self._start_worker()
        self.replaced += 1
        if video is not None:
            task.done.add(video.video_id)
            yield Failure(task.shard, video.video_id, video.path, reason)
        else:
            task.deaths += 1
            if task.deaths > MAX_DEATHS_WITHOUT_A_VIDEO:
                raise RuntimeError(f"decode workers died {task.deaths} times on shard {task.shard} before opening "
                                   f"any video ({reason})")
        if self._left(task):
            self._todo.insert(0, task)
        else:
            yield ShardEnd(task.shard)

    @staticmethod
    def _left(task: _Task) -> list[VideoSource]:
        return [source for source in task.sources if source.video_id not in task.done]

    def _stop(self) -> None:
        for worker in self._workers:
            try:
                worker.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()

