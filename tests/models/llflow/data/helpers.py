"""Writers for test images in formats flowkit's own writer does not produce (16-bit, gray, RGBA)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def save_rgb(path: Path, pixels: np.ndarray) -> Path:
    """Save an (H, W, 3) uint8 array as an RGB file (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(path)
    return path


def _png_filter(rows: np.ndarray, kinds: np.ndarray, bpp: int) -> np.ndarray:
    """Apply PNG filter ``kinds[r]`` to each row of raw bytes (the encoder's side, PNG spec §9)."""
    x = rows.astype(np.int32)
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    up = np.zeros_like(x)
    up[1:] = x[:-1]
    corner = np.zeros_like(x)
    corner[1:, bpp:] = x[:-1, :-bpp]
    p = left + up - corner
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - corner)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, corner))
    predictors = [np.zeros_like(x), left, up, (left + up) // 2, paeth]
    out = np.stack([(x[r] - predictors[k][r]) % 256 for r, k in enumerate(kinds)])
    return out.astype(np.uint8)


def save_png_rgb16(path: Path, pixels: np.ndarray, filters: np.ndarray | None = None) -> Path:
    """Write (H, W, 3) or (H, W, 4) uint16 as a 16-bit RGB(A) PNG, chunk by chunk (Pillow cannot).

    ``filters`` gives each row's PNG filter type (0-4); default all 0 (none).
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, channels = pixels.shape
    raw = np.frombuffer(pixels.astype(">u2").tobytes(), dtype=np.uint8).reshape(height, width * channels * 2)
    kinds = np.zeros(height, dtype=np.uint8) if filters is None else np.asarray(filters, dtype=np.uint8)
    filtered = _png_filter(raw, kinds, channels * 2)
    rows = b"".join(bytes([k]) + filtered[y].tobytes() for y, k in enumerate(kinds))
    header = struct.pack(">IIBBBBB", width, height, 16, {3: 2, 4: 6}[channels], 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def random_rgb(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
