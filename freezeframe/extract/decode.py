"""Video decoding: PyAV (default: seeks to the keyframe before each distant target), torchcodec (also on CUDA: NVDEC),
or decord.

A reader knows every frame's timestamp (seconds since the first frame, from the container's own
presentation times) and which frames are keyframes before decoding, and decodes only requested
frames, chunk by chunk. Decoding is one thread per reader: decode workers are the parallelism.
In fast mode a reader returns frames already resized to the backbone's short side.
"""

from __future__ import annotations

import functools
import io
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np
import torch

from freezeframe.errors import InputError
from freezeframe.extract.preprocess import resize_short_side, resized_shape

DECODERS = ("auto", "pyav", "torchcodec", "decord")
DEFAULT_MAX_PIXELS = 7680 * 4320  # 8K UHD; one larger frame already costs >100 MB as RGB
# demuxers that open other files or URLs named inside the input; only plain local video files are read
REFUSED_DEMUXERS = ("hls", "concat", "dash", "image2", "tee", "ffmetadata", "webm_dash_manifest")
REFUSED_HEADS = {b"#EXTM3U": "an HLS playlist", b"ffconcat": "an FFmpeg concat list", b"#EXTINF": "an HLS playlist"}
# containers without reliable presentation timestamps: frames are decoded from the start, never seeked
SEQUENTIAL_DEMUXERS = ("avi", "mpegts", "mpeg", "h264", "hevc", "m4v", "mjpeg", "rawvideo", "gif")


class VideoReadError(Exception):
    """The video cannot be opened or decoded; the message is the reason recorded in failures.jsonl."""


@dataclass(frozen=True)
class DecodeOptions:
    """How readers decode: `max_pixels` per frame (checked before decoding), threads per reader, the `device` that
    decodes (`cuda`/`cuda:N`: NVDEC through torchcodec), and `short_side`: when set (fast mode), frames come out
    resized to it, antialiased with `interpolation`, so no full-size frame leaves the reader."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    threads: int = 1
    device: str = "cpu"
    short_side: int | None = None
    interpolation: str = "bilinear"

    def frame_bytes(self, height: int, width: int) -> int:
        """Bytes one frame of a chunk takes in a reader: the decoded frame or its resized output, the larger."""
        out = resized_shape(height, width, self.short_side) if self.short_side else (height, width)
        return 3 * max(height * width, out[0] * out[1])


class FrameReader(Protocol):
    name: str
    timestamps: np.ndarray  # (n,) seconds since the first frame, presentation order
    end: float  # seconds since the first frame at which the last one ends (its own duration where the file says)
    start: float  # seconds from the container's start to the first frame (0 for most files)
    keyframes: np.ndarray  # (k,) sorted indices of the frames a decoder can start from
    frame_bytes: int  # bytes one frame of a chunk takes while it is decoded (DecodeOptions.frame_bytes)

    def get(self, indices: np.ndarray) -> np.ndarray:
        """uint8 RGB frames (n, H, W, 3) for sorted, unique frame indices (resized when the options say so)."""

    def close(self) -> None: ...


def _check_path(path: str) -> None:
    p = Path(path)
    if p.is_dir():
        raise VideoReadError("is a directory, not a video file")
    if not p.exists():
        raise VideoReadError("file does not exist")
    info = p.stat()
    if not stat.S_ISREG(info.st_mode):
        raise VideoReadError("not a regular file (a pipe or device); only plain local video files are read")
    if info.st_size == 0:
        raise VideoReadError("file is empty (0 bytes)")
    with open(path, "rb") as handle:
        head = handle.read(16).lstrip(b"\xef\xbb\xbf \t\r\n")
    for magic, what in REFUSED_HEADS.items():
        if head.startswith(magic):
            raise VideoReadError(f"is {what}, not a video file; only plain local video files are read")


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise VideoReadError(f"the container gives no frame size ({width}x{height})")
    if width * height > max_pixels:
        raise VideoReadError(f"frame size {width}x{height} ({width * height / 1e6:.1f} MP) is over --max-pixels "
                             f"{max_pixels} ({max_pixels / 1e6:.1f} MP)")


def _output(frames: torch.Tensor, options: DecodeOptions) -> np.ndarray:
    """Decoded uint8 frames (n, H, W, 3) on any device as a reader returns them: resized when the options say so."""
    if options.short_side is not None:
        frames = resize_short_side(frames, options.short_side, options.interpolation)
    return np.ascontiguousarray(frames.cpu().numpy())


def _relative(ts: np.ndarray) -> np.ndarray:
    return (ts - ts[0]).astype(np.float64) if len(ts) else ts.astype(np.float64)


def _is_mpeg_ts(path: str) -> bool:
    """MPEG transport streams (188-byte packets starting 0x47; M2TS/AVCHD: 192 bytes with a 4-byte prefix)."""
    with open(path, "rb") as handle:
        head = handle.read(3 * 192 + 1)
    return any(len(head) > offset + 2 * size and all(head[offset + k * size] == 0x47 for k in range(3))
               for offset, size in ((0, 188), (4, 192)))


def _open_container(path: str):
    """av.open a plain local file, refusing demuxers that read other files; VideoReadError on failure."""
    import av

    try:
        container = av.open(path, options={"protocol_whitelist": "file"})
    except Exception as exc:  # noqa: BLE001 - av raises many error types for bad input
        raise VideoReadError(_short(exc)) from None
    if container.format.name in REFUSED_DEMUXERS:
        container.close()
        raise VideoReadError(f"{container.format.name} input reads other files; only plain local video files are read")
    return container


@dataclass
class PacketIndex:
    """What one demux pass (no decoding) learns: presentation times, keyframes, whether seeking is exact."""

    pts: np.ndarray  # (n,) int stream time-base units, sorted (presentation order)
    timestamps: np.ndarray  # (n,) seconds since the first frame
    keyframes: np.ndarray  # (k,) indices into pts
    seek_points: np.ndarray  # (k,) the timestamp that seeks to each keyframe (container-specific)
    seekable: bool  # real, unique presentation times in a container that has them
    end: float  # seconds since the first frame at which the last frame ends (what ffmpeg's filters take as EOF)
    start: float  # seconds from the container's start to the first frame (ffmpeg's filters count from the former)


def end_of_last_frame(timestamps: np.ndarray, last_duration: float | None) -> float:
    """When the last frame stops showing: its start plus its own duration, else the median frame step (0 alone)."""
    if last_duration is None or not last_duration > 0:
        last_duration = float(np.median(np.diff(timestamps))) if len(timestamps) > 1 else 0.0
    return float(timestamps[-1] + last_duration)


def scan_packets(container, stream) -> PacketIndex:
    """Demux every packet of `stream` once to learn timestamps and keyframes (raises VideoReadError)."""
    pts, keys, dts, durations = [], [], [], []
    demuxed, all_pts = 0, True
    for packet in container.demux(stream):
        if packet.pts is not None or packet.dts is not None:
            demuxed += 1  # every packet but the final flush packets
        if packet.size == 0:
            continue
        stamp = packet.pts if packet.pts is not None else packet.dts
        if stamp is None:
            raise VideoReadError("packets without timestamps")
        all_pts &= packet.pts is not None
        pts.append(stamp)
        keys.append(bool(packet.is_keyframe))
        dts.append(stamp if packet.dts is None else packet.dts)
        durations.append(packet.duration or 0)
    if not pts:
        raise VideoReadError("no video frames")
    if stream.frames and demuxed < stream.frames:
        raise VideoReadError(f"truncated video: the container declares {stream.frames} frames but only {demuxed} "
                             "are present")
    raw = np.asarray(pts, dtype=np.int64)
    order = np.argsort(raw, kind="stable")
    sorted_pts = raw[order]
    keyframes = np.flatnonzero(np.asarray(keys)[order])
    points = raw
    if container.format.name.startswith("mov"):  # the MP4 demuxer seeks by DTS, shifted to start where the PTS do
        decode_ts = np.asarray(dts, dtype=np.int64)
        points = decode_ts - decode_ts.min() + raw.min()
    seek_points = points[order][keyframes]
    unique = bool(len(sorted_pts) < 2 or (np.diff(sorted_pts) > 0).all())
    seekable = all_pts and unique and len(keyframes) > 0 and container.format.name.split(",")[0] not in \
        SEQUENTIAL_DEMUXERS
    if not len(keyframes) or keyframes[0] != 0:  # decoding from the start always works
        keyframes = np.concatenate([[0], keyframes]).astype(np.int64)
        seek_points = np.concatenate([[np.iinfo(np.int64).min], seek_points]).astype(np.int64)
    time_base = float(stream.time_base)
    timestamps = _relative(sorted_pts.astype(np.float64) * time_base)
    # the container's stream duration where it has one (the MP4 sample table: the FFmpeg that ffmpeg and decord
    # link reads the last sample's own duration there), else the last packet's
    last = (stream.start_time or 0) + stream.duration - sorted_pts[-1] if stream.duration else None
    end = end_of_last_frame(timestamps, (last if last is not None else durations[int(order[-1])]) * time_base)
    start = max(0.0, sorted_pts[0] * time_base - (container.start_time or 0) / 1e6)
    return PacketIndex(sorted_pts, timestamps, keyframes, seek_points, seekable, end, start)


class PyAVReader:
    """PyAV: seeks to the keyframe before a target only when one lies past the decoder's position, then decodes
    forward to it (frames identical to decoding from the start); AVI/MPEG-TS/raw streams decode sequentially."""

    name = "pyav"

    def __init__(self, path: str, options: DecodeOptions = DecodeOptions(), seek: bool = True) -> None:
        self._path = path
        self._options = options
        container = _open_container(path)
        try:
            if not container.streams.video:
                raise VideoReadError("no video stream (audio-only or not a video)")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            _check_size(width, height, options.max_pixels)
            self.frame_bytes = options.frame_bytes(height, width)
            self.index = scan_packets(container, stream)
        except VideoReadError:
            container.close()
            raise
        except Exception as exc:  # noqa: BLE001
            container.close()
            raise VideoReadError(_short(exc)) from None
        container.close()
        self.timestamps, self.start, self.end = self.index.timestamps, self.index.start, self.index.end
        self.keyframes = self.index.keyframes
        self.seeking = seek and self.index.seekable
        self._position = {int(p): i for i, p in enumerate(self.index.pts)}
        self._container = None
        self._frames = None
        self._next = 0  # index of the frame the decoder outputs next
        self.decoded = 0  # frames decoded so far (for benchmarks)

    def _open(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = _open_container(self._path)
        self._stream = self._container.streams.video[0]
        self._stream.thread_count = self._options.threads
        self._stream.thread_type = "AUTO" if self._options.threads != 1 else "SLICE"
        self._frames = self._container.decode(self._stream)
        self._next = 0

    def _seek_to(self, keyframe: int) -> None:
        """Position the decoder at `keyframe` (a frame index); the next frame out is at or before it."""
        if keyframe == 0 or self._container is None:
            self._open()
            if keyframe == 0:
                return
        point = self.index.seek_points[np.searchsorted(self.keyframes, keyframe)]
        self._container.seek(int(point), stream=self._stream, backward=True, any_frame=False)
        self._frames = self._container.decode(self._stream)
        self._next = -1  # unknown until a frame comes out

    def _decode_to(self, target: int):
        """Decode forward to frame `target`; None if the decoder went past it (a seek landed too late)."""
        for frame in self._frames:
            self.decoded += 1
            if self.seeking:
                index = self._position.get(frame.pts) if frame.pts is not None else None
                if index is None:
                    raise VideoReadError(f"decoded a frame with an unknown timestamp ({frame.pts}) after a seek")
            else:
                index = self._next
            self._next = index + 1
            if index == target:
                return frame
            if index > target:
                return None
        raise VideoReadError(f"decoded only {self.decoded} frames, frame {target} of {len(self.timestamps)} never "
                             "came (truncated or corrupt video)")

    def _keyframe_before(self, target: int) -> int:
        return int(self.keyframes[np.searchsorted(self.keyframes, target, side="right") - 1])

    def get(self, indices: np.ndarray) -> np.ndarray:
        out = []
        try:
            for target in map(int, indices):
                if not self.seeking:
                    if self._frames is None or target < self._next:
                        self._open()
                    frame = self._decode_to(target)
                else:
                    keyframe = self._keyframe_before(target)
                    if self._frames is None or target < self._next or keyframe > max(self._next, 0):
                        self._seek_to(keyframe)
                    frame = self._decode_to(target)
                    while frame is None:  # the seek landed after the target: start from an earlier keyframe
                        keyframe = self._keyframe_before(keyframe - 1) if keyframe > 0 else 0
                        self._seek_to(keyframe)
                        frame = self._decode_to(target)
                out.append(frame.to_ndarray(format="rgb24"))
        except VideoReadError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise VideoReadError(f"decoding failed near frame {self._next}: {_short(exc)}") from None
        return _output(torch.from_numpy(np.stack(out)), self._options)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
            self._frames = None


class TorchCodecReader:
    """torchcodec (FFmpeg from the system): exact seeks by frame index; timestamps from a PyAV demux pass (`index`).

    On a CUDA `options.device` it decodes with NVDEC and resizes on the GPU, so only resized frames reach the CPU.
    """

    def __init__(self, path: str, options: DecodeOptions = DecodeOptions(), index: PyAVReader | None = None) -> None:
        index = index or PyAVReader(path, options)  # timestamps, keyframes, size check, refusals
        if not index.seeking:
            raise VideoReadError("container without reliable presentation timestamps, which torchcodec seeks one or "
                                 "two frames off; read it with --decoder pyav (auto does)")
        self.timestamps, self.keyframes, self.frame_bytes = index.timestamps, index.keyframes, index.frame_bytes
        self.start, self.end = index.start, index.end
        self._options = options
        try:
            from torchcodec.decoders import VideoDecoder

            self._decoder = VideoDecoder(path, seek_mode="exact", num_ffmpeg_threads=options.threads,
                                         dimension_order="NHWC", device=options.device)
        except ImportError:
            raise VideoReadError("torchcodec is not installed (pip install torchcodec; it needs system FFmpeg)") from None
        except Exception as exc:  # noqa: BLE001
            raise VideoReadError(_short(exc)) from None
        # NVDEC lacks some codecs; torchcodec then decodes that video on the CPU and uploads its frames
        self.name = "torchcodec" if options.device == "cpu" else \
            f"torchcodec-{options.device}" + (" (CPU fallback)" if self._decoder.cpu_fallback else "")

    def get(self, indices: np.ndarray) -> np.ndarray:
        try:
            return _output(self._decoder.get_frames_at(list(map(int, indices))).data, self._options)
        except Exception as exc:  # noqa: BLE001
            raise VideoReadError(f"decoding failed: {_short(exc)}") from None

    def close(self) -> None:
        self._decoder = None


class DecordReader:
    """decord 0.6 (optional extra, unmaintained since 2021): refuses files it is known to decode wrongly."""

    name = "decord"

    def __init__(self, path: str, options: DecodeOptions = DecodeOptions()) -> None:
        import decord

        decord.logging.set_level(decord.logging.QUIET)  # its FFmpeg's notices would land in the progress bar
        if _is_mpeg_ts(path):
            # decord 0.6 opens H.264 in MPEG-TS but decodes none of it, and returns MPEG-2 in MPEG-TS one frame off
            raise VideoReadError("MPEG transport stream, which decord decodes wrongly (no frames, or frames off "
                                 "by one); read it with --decoder pyav (auto does)")
        self._options = options
        self.frame_bytes = options.frame_bytes(*_probe_size(path, options.max_pixels))
        try:
            self._reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=options.threads)
            n = len(self._reader)
            if n == 0:
                raise VideoReadError("no video frames")
            spans = self._reader.get_frame_timestamp(np.arange(n)).astype(np.float64)  # (n, 2) start, end
            ts = spans[:, 0]
            keyframes = np.asarray(self._reader.get_key_indices(), dtype=np.int64)
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
        self.timestamps, self.start = _relative(ts), max(0.0, float(ts[0]))
        self.end = end_of_last_frame(self.timestamps, spans[-1, 1] - spans[-1, 0])
        self.keyframes = keyframes if len(keyframes) and keyframes[0] == 0 else np.concatenate([[0], keyframes])

    def get(self, indices: np.ndarray) -> np.ndarray:
        try:
            return _output(torch.from_numpy(self._reader.get_batch(list(map(int, indices))).asnumpy()), self._options)
        except Exception as exc:  # noqa: BLE001
            raise VideoReadError(f"decoding failed: {_short(exc)}") from None

    def close(self) -> None:
        del self._reader


def _probe_size(path: str, max_pixels: int) -> tuple[int, int]:
    """(height, width) from the container header (PyAV, no decoding), checked before another library decodes."""
    container = _open_container(path)
    try:
        if not container.streams.video:
            raise VideoReadError("no video stream (audio-only or not a video)")
        ctx = container.streams.video[0].codec_context
        _check_size(ctx.width, ctx.height, max_pixels)
        return ctx.height, ctx.width
    finally:
        container.close()


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def _decord(path: str, options: DecodeOptions) -> DecordReader:
    if not decord_available():
        raise VideoReadError("decord is not installed (pip install 'freezeframe[decord]', or use --decoder pyav)")
    return DecordReader(path, options)


def _auto(path: str, options: DecodeOptions) -> FrameReader:
    """PyAV, chosen by measurement (see benchmarks/decode.py); on CUDA, NVDEC through torchcodec for every container
    with real timestamps, and PyAV on the CPU for the rest."""
    index = PyAVReader(path, options)
    if options.device == "cpu" or not index.seeking:
        return index
    return TorchCodecReader(path, options, index)


READERS: dict[str, Callable[[str, DecodeOptions], FrameReader]] = {
    "auto": _auto,
    "pyav": PyAVReader,
    "torchcodec": TorchCodecReader,
    "decord": _decord,
}


def open_video(path: str, decoder: str = "auto", options: DecodeOptions = DecodeOptions()) -> FrameReader:
    """Open a plain local video file with the chosen decoder (VideoReadError with a one-line reason)."""
    if decoder not in READERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of {DECODERS}")
    _check_path(path)
    return READERS[decoder](path, options)


def iter_chunks(
    reader: FrameReader, indices: np.ndarray, max_chunk_bytes: int = 64 * 1024 * 1024, multiple: int = 1
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Decode the sampled frames in chunks small enough to bound memory: yields (frames, indices).

    A chunk holds as many frames as `max_chunk_bytes` allows at the reader's frame size (at least one backbone
    input); every chunk but the last holds a multiple of `multiple` frames (whole inputs of that many frames).
    """
    size = max(1, max_chunk_bytes // reader.frame_bytes // multiple) * multiple
    for start in range(0, len(indices), size):
        chunk = indices[start:start + size]
        unique = np.unique(chunk)
        yield reader.get(unique)[np.searchsorted(unique, chunk)], chunk


def check_decode_device(device: str) -> None:
    """Refuse, in one line (InputError), a `--decode-device` this machine cannot decode on."""
    if device == "cpu":
        return
    if not re.fullmatch(r"cuda(:\d+)?", device):
        raise InputError(f"unknown --decode-device {device!r}; choose cpu, cuda or cuda:N.")
    if not torch.cuda.is_available():
        raise InputError(f"--decode-device {device} decodes with NVDEC on a CUDA GPU, and torch sees none "
                         "(torch.cuda.is_available() is False); decode on the CPU (--decode-device cpu, the default).")
    problem = _nvdec_problem(device)
    if problem:
        raise InputError(f"--decode-device {device}: {problem}")


@functools.cache
def _nvdec_problem(device: str) -> str | None:
    """Why torchcodec cannot decode with NVDEC on `device` (a small H.264 clip made in memory is tried), or None."""
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError:
        return "torchcodec is not installed (pip install 'freezeframe[torchcodec]'; it needs system FFmpeg)."
    except Exception as exc:  # noqa: BLE001 - torchcodec raises RuntimeError when it finds no FFmpeg to load
        return f"torchcodec cannot load ({_short(exc)}); it needs system FFmpeg (apt-get install ffmpeg)."
    try:
        decoder = VideoDecoder(_probe_clip(), device=device)
        decoder.get_frame_at(0)
    except Exception as exc:  # noqa: BLE001 - a CPU-only build, a missing driver library, a bad device index
        return (f"torchcodec cannot decode on {device} ({_short(exc)}); install torchcodec's CUDA build (from the "
                "PyTorch wheel index of your CUDA version, as torchcodec's README says) or decode on the CPU.")
    if decoder.cpu_fallback:
        return (f"torchcodec would decode on the CPU, not with NVDEC ({decoder.cpu_fallback}); the NVIDIA driver's "
                "video decoding library (libnvcuvid) is needed.")
    return None


def _probe_clip() -> bytes:
    """Two 128x128 H.264 frames in an MP4, made in memory: what NVDEC must decode before a run relies on it."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 128, "yuv420p"
        for level in (16, 235):
            frame = av.VideoFrame.from_ndarray(np.full((128, 128, 3), level, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def _short(exc: BaseException) -> str:
    """First meaningful line of a decoder error, without C++ file/line prefixes."""
    text = str(exc).strip() or type(exc).__name__
    line = text.splitlines()[0]
    if "] " in line and line.startswith("["):
        line = line.split("] ", 1)[1]
    if ".cc:" in line:
        line = line.split(": ", 1)[-1]
    return line[:300]
