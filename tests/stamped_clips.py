"""Tiny H.264 clips whose pixels spell their frame number (12 bits, one 16x16 black/white block each), so the
source frame behind any output of another program (ffmpeg's fps filter) can be read back from its pixels."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, BITS = 64, 48, 12
RATES = {"24": Fraction(24), "25": Fraction(25), "29.97": Fraction(30000, 1001), "30": Fraction(30),
         "60": Fraction(60)}
CONTAINERS = ("mp4", "mkv")  # MP4: time base from the rate; Matroska: 1 ms time base


def stamp(number: int) -> np.ndarray:
    """An RGB frame (HEIGHT, WIDTH, 3) whose 4x3 blocks are the bits of `number`, least significant first."""
    image = np.zeros((HEIGHT, WIDTH), np.uint8)
    for bit in range(BITS):
        row, col = divmod(bit, 4)
        image[row * 16:(row + 1) * 16, col * 16:(col + 1) * 16] = 255 * ((number >> bit) & 1)
    return np.repeat(image[:, :, None], 3, axis=2)


def read_stamp(frame: np.ndarray) -> int:
    """The number a (HEIGHT, WIDTH, 3) frame spells (block centres, so scaling or chroma leaks do not matter)."""
    bits = [frame[r * 16 + 4:r * 16 + 12, c * 16 + 4:c * 16 + 12, 0].mean() > 127
            for r, c in (divmod(b, 4) for b in range(BITS))]
    return sum(1 << b for b, on in enumerate(bits) if on)


def frame_count(rate: Fraction) -> int:
    """About 3.3 s of frames: three whole seconds and a partial one."""
    return int(rate * 3) + 7


def make_clip(path: Path, rate: Fraction, frames: int) -> None:
    """Encode `frames` stamped frames at `rate` losslessly (x264 qp 0, no B-frames) into `path`."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"qp": "0", "bf": "0"}
        for number in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(stamp(number), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def halves(number: int, height: int = 270, width: int = 480) -> np.ndarray:
    """An RGB frame whose left half is grey 16 * (number % 16) and right half 16 * (number // 16) (number < 256):
    flat areas survive any resize and crop, so a frame's number reads back from two means."""
    image = np.empty((height, width, 3), np.uint8)
    image[:, :width // 2], image[:, width // 2:] = 16 * (number % 16), 16 * (number // 16)
    return image


def read_halves(left: float, right: float) -> int:
    """The number `halves` stamped, from the mean grey of a frame's left and right parts (any scale)."""
    return int(round(left / 16)) + 16 * int(round(right / 16))


def make_halves_clip(path: Path, frames: int, rate: int = 25, height: int = 270, width: int = 480) -> None:
    """Encode `frames` `halves` frames (16:9 by default) at `rate` losslessly (x264 qp 0, no B-frames) into `path`."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"qp": "0", "bf": "0"}
        for number in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(halves(number, height, width), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
