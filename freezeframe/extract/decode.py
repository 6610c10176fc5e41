"""Video decoding with decord, or PyAV when decord cannot open a file reliably or is not installed.

A reader knows every frame's timestamp (seconds since the first frame, from the container's
own presentation times) before decoding, and decodes only requested frames, window by window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

DECODERS = ("auto", "decord", "pyav")


class VideoReadError(Exception):
    """The video cannot be opened or decoded; the message is the reason recorded in failures.jsonl."""


class FrameReader(Protocol):
    name: str
    timestamps: np.ndarray

    def get(self, indices: np.ndarray) -> np.ndarray:
        """uint8 RGB frames (n, H, W, 3) for sorted, unique frame indices."""

    def close(self) -> None: ...


def _check_path(path: str) -> None:
    p = Path(path)
    if p.is_dir():
        raise VideoReadError("is a directory, not a video file")
    if not p.exists():
        raise VideoReadError("file does not exist")
    if p.stat().st_size == 0:
        raise VideoReadError("file is empty (0 bytes)")


def _relative(ts: np.ndarray) -> np.ndarray:
    return (ts - ts[0]).astype(np.float64) if len(ts) else ts.astype(np.float64)


def _is_mpeg_ts(path: str) -> bool:
    """MPEG transport streams (188-byte packets starting 0x47; M2TS/AVCHD: 192 bytes with a 4-byte prefix)."""
    with open(path, "rb") as handle:
        head = handle.read(3 * 192 + 1)
    return any(len(head) > offset + 2 * size and all(head[offset + k * size] == 0x47 for k in range(3))
               for offset, size in ((0, 188), (4, 192)))


class DecordReader:
    name = "decord"

    def __init__(self, path: str, num_threads: int = 0) -> None:
        import decord

        if _is_mpeg_ts(path):
            # decord 0.6 opens H.264 in MPEG-TS but decodes none of it, and returns MPEG-2 in MPEG-TS one frame off
            raise VideoReadError("MPEG transport stream, which decord decodes wrongly (no frames, or frames off "
                                 "by one); read it with --decoder pyav (auto does)")
        try:
            self._reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
            n = len(self._reader)
            if n == 0:
                raise VideoReadError("no video frames")
            ts = self._reader.get_frame_timestamp(np.arange(n))[:, 0].astype(np.float64)
        except VideoReadError:
            raise
        except Exception as exc:  # decord raises RuntimeError / DECORDError with C++ context
            raise VideoReadError(_short(exc)) from None
        if (ts < 0).any() or (np.diff(ts) < 0).any():
            # Containers without presentation times (AVI): decord's timestamps are garbage and its seeks
            # return a wrong frame now and then (e.g. the last frame of an MPEG-4 AVI in ~1 of 12 reads);
            # refusing such files makes `auto` read them with PyAV, which decodes them sequentially.
            del self._reader
            raise VideoReadError("container has no presentation timestamps (e.g. AVI), which decord cannot "
                                 "seek reliably; read it with --decoder pyav (auto does)")
        self.timestamps = _relative(ts)

    def get(self, indices: np.ndarray) -> np.ndarray:
        try:
            return self._reader.get_batch(list(map(int, indices))).asnumpy()
        except Exception as exc:  # noqa: BLE001
            raise VideoReadError(f"decoding failed: {_short(exc)}") from None

    def close(self) -> None:
        del self._reader


class PyAVReader:
    name = "pyav"

    def __init__(self, path: str, threads: str = "AUTO") -> None:
        import av

        self._path = path
        self._threads = threads
        try:
            container = av.open(path)
        except Exception as exc:  # noqa: BLE001 - av raises many error types for bad input
            raise VideoReadError(_short(exc)) from None
        try:
            if not container.streams.video:
                raise VideoReadError("no video stream (audio-only or not a video)")
            stream = container.streams.video[0]
            pts = []
            demuxed = 0
            for packet in container.demux(stream):
                if packet.pts is not None or packet.dts is not None:
                    demuxed += 1  # every packet but the final flush packets
                if packet.size == 0:
                    continue
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None:
                    raise VideoReadError("packets without timestamps")
                pts.append(stamp)
            if not pts:
                raise VideoReadError("no video frames")
            if stream.frames and demuxed < stream.frames:
                raise VideoReadError(
                    f"truncated video: the container declares {stream.frames} frames but only {demuxed} are present"
                )
            self.timestamps = _relative(np.sort(np.asarray(pts, dtype=np.float64)) * float(stream.time_base))
        except VideoReadError:
            container.close()
            raise
        except Exception as exc:  # noqa: BLE001
            container.close()
            raise VideoReadError(_short(exc)) from None
        container.close()
        self._container = None
        self._frames = None
        self._next = 0

    def _restart(self) -> None:
        import av

        if self._container is not None:
            self._container.close()
        self._container = av.open(self._path)
        stream = self._container.streams.video[0]
        stream.thread_type = self._threads
        self._frames = self._container.decode(stream)
        self._next = 0

    def get(self, indices: np.ndarray) -> np.ndarray:
        if self._frames is None or int(indices[0]) < self._next:
            self._restart()
        wanted = iter(map(int, indices))
        target = next(wanted)
        out = []
        try:
            for frame in self._frames:
                index = self._next
                self._next += 1
                if index == target:
                    out.append(frame.to_ndarray(format="rgb24"))
                    target = next(wanted, None)
                    if target is None:
                        break
        except Exception as exc:  # noqa: BLE001
            raise VideoReadError(f"decoding failed at frame {self._next}: {_short(exc)}") from None
        if len(out) < len(indices):
            raise VideoReadError(
                f"decoded only {self._next} frames of {len(self.timestamps)} (truncated or corrupt video)"
            )
        return np.stack(out)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def open_video(path: str, decoder: str = "auto") -> FrameReader:
    """Open a video with the chosen decoder; `auto` tries decord, then PyAV, and reports both reasons."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of {DECODERS}")
    _check_path(path)
    if decoder == "pyav" or (decoder == "auto" and not decord_available()):
        return PyAVReader(path)
    if decoder == "decord":
        if not decord_available():
            raise VideoReadError("decord is not installed (use --decoder pyav)")
        return DecordReader(path)
    try:
        return DecordReader(path)
    except VideoReadError as decord_error:
        try:
            return PyAVReader(path)
        except VideoReadError as pyav_error:
            raise VideoReadError(f"decord: {decord_error}; pyav: {pyav_error}") from None


def iter_windows(
    reader: FrameReader, indices: np.ndarray, max_window_bytes: int = 64 * 1024 * 1024, multiple: int = 1
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Decode the sampled frames in windows small enough to bound memory: yields (frames, indices).

    Every window but the last holds a multiple of `multiple` frames (whole backbone inputs of that many frames).
    """
    start, window = 0, multiple  # the first window is one input; later ones are sized from the real frame size
    while start < len(indices):
        chunk = indices[start:start + window]
        unique = np.unique(chunk)
        frames = reader.get(unique)
        yield frames[np.searchsorted(unique, chunk)], chunk
        start += len(chunk)
        window = max(1, max_window_bytes // max(1, frames[0].nbytes) // multiple) * multiple


def _short(exc: BaseException) -> str:
    """First meaningful line of a decoder error, without C++ file/line prefixes."""
    text = str(exc).strip() or type(exc).__name__
    line = text.splitlines()[0]
    if "] " in line and line.startswith("["):
        line = line.split("] ", 1)[1]
    if ".cc:" in line:
        line = line.split(": ", 1)[-1]
    return line[:300]
