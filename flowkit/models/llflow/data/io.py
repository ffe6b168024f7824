"""Reading and writing RGB images with Pillow, as float tensors in [0, 1] or as uint8 tensors.

Every failure (Pillow's decompression-bomb limit included) is an :class:`ImageReadError` naming
the file, so a pipeline can report it and carry on.
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from torch import Tensor

from flowkit.models.llflow._files import write_atomically
from flowkit.models.llflow.data._png16 import read_png16_rgb

__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "image_size", "read_image", "to_uint8", "write_image"]

IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
"""File suffixes (lower case) treated as images when folders are scanned."""

# Modes that are converted to RGB without comment: the conversion keeps all the information.
_LOSSLESS_TO_RGB = {"RGB", "P", "YCbCr"}
_GRAY_16BIT = {"I;16", "I;16B", "I;16L", "I;16N"}


class ImageReadError(OSError):
    """An image file could not be opened or decoded; ``path`` names it and ``reason`` says why.

    Example:
        >>> err = ImageReadError("photos/a.png", "not an image")
        >>> str(err), err.path.name
        ('cannot read image photos/a.png: not an image', 'a.png')
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {path}: {reason}")


def image_size(path: str | Path) -> tuple[int, int]:
    """Return ``(height, width)`` of an image from its header, without decoding the pixels.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from flowkit.models.llflow.data import image_size, write_image
        >>> path = Path(tempfile.mkdtemp()) / "a.png"
        >>> write_image(path, torch.zeros(3, 4, 6, dtype=torch.uint8))
        >>> image_size(path)
        (4, 6)
    """
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(path, str(exc) or type(exc).__name__) from exc
    return height, width


def _decode(path: str | Path) -> tuple[np.ndarray, float]:
    try:
        with Image.open(path) as im:
            # The tile list (with the raw sample layout) is only there before load().
            raw = im.tile[0].args if im.tile else None
            im.load()
            mode = im.mode
            if mode in _GRAY_16BIT or mode == "I":
                warnings.warn(f"{path}: grayscale image (mode {mode}) converted to RGB", stacklevel=3)
                gray = np.asarray(im).astype(np.int64)
                # Older Pillow versions give mode "I" for 16-bit grayscale PNGs; a 32-bit image
                # (values beyond 16 bit) has no defined white level.
                if gray.size and (gray.min() < 0 or gray.max() > 65535):
                    raise ValueError(f"mode {mode} values outside 0..65535 (not a 16-bit image)")
                return np.repeat(gray[:, :, None], 3, axis=2), 65535.0
            deep = None
            if isinstance(raw, str) and raw.endswith(";16B") and mode in ("RGB", "RGBA"):
                # Pillow has no 16-bit colour mode and keeps only the high byte of each sample.
                deep = read_png16_rgb(path) if im.format == "PNG" else None
                if deep is None:
                    warnings.warn(f"{path}: 16-bit colour image decoded at 8-bit precision (interlaced or not "
                                  "a PNG: Pillow keeps the high byte)", stacklevel=3)
            if mode in ("L", "1", "LA"):
                warnings.warn(f"{path}: grayscale image (mode {mode}) converted to RGB", stacklevel=3)
            elif mode in ("RGBA", "PA", "RGBa") or (mode == "P" and "transparency" in im.info):
                warnings.warn(f"{path}: alpha channel (mode {mode}) dropped, converted to RGB", stacklevel=3)
            elif mode not in _LOSSLESS_TO_RGB:
                warnings.warn(f"{path}: mode {mode} converted to RGB", stacklevel=3)
            if deep is not None:
                return deep, 65535.0
            rgb = np.asarray(im if mode == "RGB" else im.convert("RGB"))
    except (OSError, ValueError, SyntaxError, zlib.error, Image.DecompressionBombError) as exc:
        raise ImageReadError(path, str(exc) or type(exc).__name__) from exc
    return rgb, 255.0


def read_image(path: str | Path, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """Read an image file as an RGB tensor of shape (3, H, W).

    A float result is in [0, 1] (16-bit PNGs at full precision); other modes are converted to RGB
    with a :class:`UserWarning` naming the file.

    Args:
        path: the image file.
        dtype: ``torch.uint8`` (16-bit values rounded to 8 bit) or a floating dtype.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from flowkit.models.llflow.data import read_image, write_image
        >>> path = Path(tempfile.mkdtemp()) / "a.png"
        >>> write_image(path, torch.full((3, 2, 2), 255, dtype=torch.uint8))
        >>> x = read_image(path)
        >>> x.shape, x.dtype, x.max().item()
        (torch.Size([3, 2, 2]), torch.float32, 1.0)
    """
    pixels, peak = _decode(path)
    chw = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
    if dtype == torch.uint8:
        if peak == 255.0:
            return chw.to(torch.uint8)
        return torch.round(chw.to(torch.float64) * (255.0 / peak)).to(torch.uint8)
    if not dtype.is_floating_point:
        raise ValueError(f"read_image returns uint8 or a floating dtype, got {dtype}")
    return (chw.to(torch.float64) / peak).to(dtype)


def to_uint8(image: Tensor, *, rounding: str = "round") -> Tensor:
    """Quantise a float image in [0, 1] to uint8 (a uint8 input is returned as it is).

    Args:
        image: a float tensor of any shape (clamped to [0, 1]), or a uint8 tensor.
        rounding: ``"round"`` to the nearest level, or ``"truncate"``: ``(x * 255).astype(uint8)``
            in float32, as LLFlow's evaluation does.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.data import to_uint8
        >>> x = torch.tensor([0.0, 0.4999 / 255, 0.9999 / 255, 1.5])
        >>> to_uint8(x).tolist(), to_uint8(x, rounding="truncate").tolist()
        ([0, 0, 1, 255], [0, 0, 0, 255])
    """
    if image.dtype == torch.uint8:
        return image
    if not image.dtype.is_floating_point:
        raise ValueError(f"to_uint8 expects a float image in [0, 1] or uint8, got dtype {image.dtype}")
    if rounding == "round":
        return torch.round(image.clamp(0, 1) * 255).to(torch.uint8)
    if rounding == "truncate":
        # float32 on purpose: the reference multiplies float32 arrays, and that rounding decides
        # which side of an integer a value lands on before truncation.
        return (image.to(torch.float32).clamp(0, 1) * 255).to(torch.uint8)
    raise ValueError(f"rounding must be 'round' or 'truncate', got {rounding!r}")


def write_image(path: str | Path, image: Tensor, *, text: dict[str, str] | None = None) -> None:
    """Write a (3, H, W) image as an 8-bit file whose format follows the suffix (PNG is lossless).

    Parent folders are created; the file is replaced atomically. A float image is rounded by
    :func:`to_uint8`; ``text`` holds PNG text chunks to store.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from flowkit.models.llflow.data import read_image, write_image
        >>> path = Path(tempfile.mkdtemp()) / "sub" / "a.png"
        >>> image = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
        >>> write_image(path, image)
        >>> torch.equal(read_image(path, dtype=torch.uint8), image)
        True
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"write_image expects a (3, H, W) image, got shape {tuple(image.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.is_floating_point():
        if not bool(torch.isfinite(image).all()):
            raise ValueError(f"write_image: the image for {path} holds NaN or infinite values")
        low, high = float(image.min()), float(image.max())
        if low < -0.5 / 255 or high > 1 + 0.5 / 255:
            raise ValueError(f"write_image: float images must be in [0, 1], the image for {path} spans "
                             f"[{low:.4g}, {high:.4g}] (clamp it first if that is intended)")
    pixels = to_uint8(image.detach().cpu()).permute(1, 2, 0).contiguous().numpy()
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"write_image: cannot tell an image format from the suffix of {path}")
    options = {}
    if text:
        if image_format != "PNG":
            raise ValueError(f"write_image: text chunks need a PNG file, got {path}")
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
        options["pnginfo"] = info
    # Written beside the target and renamed into place: a crash or a full disk never leaves a
    # half-written file under the final name, and an earlier file survives a failed write.
    write_atomically(path, lambda out: Image.fromarray(pixels).save(out, format=image_format, **options))
