"""Full-precision decoding of 16-bit colour PNGs, which Pillow reduces to 8 bit.

The row filters (PNG specification, section 9) are undone one anti-diagonal at a time, ``H + W``
vectorised steps. Only called on files Pillow has opened; interlaced files are left to Pillow.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["read_png16_rgb"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {2: 3, 6: 4}  # colour type -> samples per pixel (RGB, RGBA)


def _paeth(left: np.ndarray, up: np.ndarray, corner: np.ndarray) -> np.ndarray:
    estimate = left + up - corner
    to_left, to_up, to_corner = np.abs(estimate - left), np.abs(estimate - up), np.abs(estimate - corner)
    return np.where(
        (to_left <= to_up) & (to_left <= to_corner), left, np.where(to_up <= to_corner, up, corner)
    )


def _unfilter(filtered: np.ndarray, filters: np.ndarray) -> np.ndarray:
    height, width, _ = filtered.shape
    # One row and one column of zeros in front stand for the "outside the image" neighbours.
    out = np.zeros((height + 1, width + 1, filtered.shape[2]), dtype=np.int32)
    kinds = filters.astype(np.int32)
    for diagonal in range(height + width - 1):
        rows = np.arange(max(0, diagonal - width + 1), min(height, diagonal + 1))
        cols = diagonal - rows
        left, up, corner = out[rows + 1, cols], out[rows, cols + 1], out[rows, cols]
        kind = kinds[rows][:, None]
        predictor = np.select(
            [kind == 1, kind == 2, kind == 3, kind == 4],
            [left, up, (left + up) >> 1, _paeth(left, up, corner)],
            default=0,
        )
        out[rows + 1, cols + 1] = (filtered[rows, cols] + predictor) & 0xFF
    return out[1:, 1:]


def read_png16_rgb(path: str | Path) -> np.ndarray | None:
    """The RGB samples of a non-interlaced 16-bit RGB/RGBA PNG as (H, W, 3) uint16, else None.

    Alpha, if present, is dropped (the caller warns about it).

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from flowkit.models.llflow.data import write_image
        >>> path = Path(tempfile.mkdtemp()) / "a.png"
        >>> write_image(path, torch.zeros(3, 2, 2, dtype=torch.uint8))
        >>> read_png16_rgb(path) is None   # an 8-bit PNG
        True
    """
    data = Path(path).read_bytes()
    if not data.startswith(_SIGNATURE):
        return None
    position, header, compressed = len(_SIGNATURE), None, []
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        return None
    width, height, depth, colour, _, _, interlace = header
    if depth != 16 or colour not in _CHANNELS or interlace != 0:
        return None
    channels = _CHANNELS[colour]
    stride = 1 + width * channels * 2
    # Inflate no more than the header's size promises: Pillow checked that size against its
    # decompression-bomb limit, but a crafted stream could hold far more data after it.
    inflated = zlib.decompressobj().decompress(b"".join(compressed), height * stride)
    raw = np.frombuffer(inflated, dtype=np.uint8)
    if raw.size < height * stride:
        raise ValueError(f"PNG image data ends early: {raw.size} of {height * stride} bytes")
    rows = raw[: height * stride].reshape(height, stride)
    filters = rows[:, 0]
    if filters.max(initial=0) > 4:
        raise ValueError(f"PNG row filter type {int(filters.max())} does not exist (0-4)")
    pixels = _unfilter(rows[:, 1:].reshape(height, width, channels * 2).astype(np.int32), filters)
    samples = pixels.reshape(height, width, channels, 2)
    values = (samples[..., 0] << 8) | samples[..., 1]  # big-endian samples
    return values[..., :3].astype(np.uint16)
