"""Finding low/normal-light image pairs on disk (LOL, LOL-v2 or any two folders) and checking them.

:func:`find_pairs` understands (folder names case-insensitive): a pair folder ``ROOT/low`` +
``ROOT/high`` (or ``normal``); LOL's ``our485`` (train) and ``eval15`` (test); LOL-v2's ``Train``
and ``Test`` with ``Low`` + ``Normal``; and a LOL-v2 root whose subsets' pairs are combined as
``"<subset>/<name>"``. Pairing is by case-folded stem, a leading ``low``/``high``/``normal``
before digits dropped (``low00001.png`` pairs with ``normal00001.png``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from flowkit.models.llflow.data.io import IMAGE_SUFFIXES, ImageReadError, image_size, read_image

__all__ = ["DatasetError", "ImagePair", "check_pairs", "find_pairs", "image_files", "pair_folders"]

_LOW_NAMES = ("low",)
_HIGH_NAMES = ("high", "normal")
_SPLITS = {"train": ("our485", "train"), "test": ("eval15", "test", "eval", "val")}
_ROLE_PREFIX = re.compile(r"^(low|high|normal)[_-]?(?=\d)")
_MAX_LISTED = 20


class DatasetError(ValueError):
    """A data folder is unusable; ``problems`` lists every reason, each naming its file.

    The message is ``summary`` followed by the first 20 problems.

    Example:
        >>> err = DatasetError("2 problems", ["low/a.png has no partner", "high/b.png has no partner"])
        >>> len(err.problems)
        2
    """

    def __init__(self, summary: str, problems: Sequence[str] = ()) -> None:
        self.problems = list(problems)
        lines = [summary, *(f"  - {p}" for p in self.problems[:_MAX_LISTED])]
        if len(self.problems) > _MAX_LISTED:
            lines.append(f"  ... and {len(self.problems) - _MAX_LISTED} more")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class ImagePair:
    """A low-light image and its normal-light reference.

    Attributes:
        name: the low image's stem, prefixed with ``"<subset>/"`` for a combined LOL-v2 root.
        low: path of the low-light image.
        high: path of the normal-light image.

    Example:
        >>> ImagePair("778", Path("eval15/low/778.png"), Path("eval15/high/778.png")).name
        '778'
    """

    name: str
    low: Path
    high: Path


def _pair_key(path: Path) -> str:
    return _ROLE_PREFIX.sub("", path.stem.casefold())


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _child(folder: Path, names: Sequence[str]) -> Path | None:
    if not folder.is_dir():
        return None
    subdirs = {sub.name.casefold(): sub for sub in sorted(folder.iterdir()) if sub.is_dir()}
    for name in names:  # the earlier name wins when several exist
        if name.casefold() in subdirs:
            return subdirs[name.casefold()]
    return None


def pair_folders(low_dir: str | Path, high_dir: str | Path, *, prefix: str = "") -> list[ImagePair]:
    """Pair the images of two folders by file name (see the module notes), sorted by name.

    ``prefix`` goes in front of every pair's name. A missing or empty folder, a file without
    partner, or two files with one name raise a :class:`DatasetError` naming every such file.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from flowkit.models.llflow.data import pair_folders, write_image
        >>> root = Path(tempfile.mkdtemp())
        >>> for folder, name in [("Low", "low00002.png"), ("Normal", "normal00002.png")]:
        ...     write_image(root / folder / name, torch.zeros(3, 4, 4))
        >>> [(p.name, p.high.name) for p in pair_folders(root / "Low", root / "Normal")]
        [('low00002', 'normal00002.png')]
    """
    low_dir, high_dir = Path(low_dir), Path(high_dir)
    problems: list[str] = []
    keyed: list[dict[str, Path]] = []
    for folder in (low_dir, high_dir):
        if not folder.is_dir():
            raise DatasetError(f"expected a folder of images at {folder}, found none")
        files = _images_in(folder)
        if not files:
            raise DatasetError(
                f"expected image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}, found none"
            )
        by_key: dict[str, Path] = {}
        for path in files:
            key = _pair_key(path)
            if key in by_key:
                problems.append(f"{path} and {by_key[key]} have the same name; cannot tell which to pair")
            by_key[key] = path
        keyed.append(by_key)
    lows, highs = keyed
    for key in sorted(lows.keys() - highs.keys()):
        problems.append(f"{lows[key]} has no partner in {high_dir}")
    for key in sorted(highs.keys() - lows.keys()):
        problems.append(f"{highs[key]} has no partner in {low_dir}")
    if problems:
        raise DatasetError(f"cannot pair {low_dir} with {high_dir}:", problems)
    pairs = [ImagePair(prefix + lows[k].stem, lows[k], highs[k]) for k in lows]
    return sorted(pairs, key=lambda p: p.name)


def _pair_dirs(folder: Path) -> tuple[Path, Path] | None:
    low, high = _child(folder, _LOW_NAMES), _child(folder, _HIGH_NAMES)
    return (low, high) if low is not None and high is not None else None


def image_files(folder: str | Path, *, recursive: bool = True) -> list[Path]:
    """The image files in ``folder`` (and its sub-folders unless ``recursive=False``), sorted.

    Every reader of a photograph folder lists it here, so they agree on which image is the ``k``-th.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from flowkit.models.llflow.data.pairs import image_files
        >>> image_files(Path(tempfile.mkdtemp()))
        Traceback (most recent call last):
        ...
        flowkit.models.llflow.data.pairs.DatasetError: expected image files in ..., found none
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"expected a folder of normal-light images at {folder}, found none")
    found = folder.rglob("*") if recursive else folder.iterdir()
    images = sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"expected image files in {folder}, found none")
    return images


def find_pairs(root: str | Path, split: str = "train") -> list[ImagePair]:
    """Find the image pairs of one split under a LOL, LOL-v2 or plain pair-folder root.

    Args:
        root: the dataset root (the module docstring lists the layouts).
        split: ``"train"`` or ``"test"`` (or ``"eval"``, ``"val"``); ignored for a pair folder.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from flowkit.models.llflow.data import find_pairs, write_image
        >>> root = Path(tempfile.mkdtemp())
        >>> for side in ("low", "high"):
        ...     write_image(root / "eval15" / side / "1.png", torch.zeros(3, 4, 4))
        >>> [p.name for p in find_pairs(root, "test")]
        ['1']
    """
    root = Path(root)
    key = {"eval": "test", "val": "test"}.get(split, split)
    if key not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test' (or 'eval'/'val'), got {split!r}")
    if not root.is_dir():
        raise DatasetError(f"expected a dataset folder at {root}, found none")
    direct = _pair_dirs(root)
    if direct is not None:
        return pair_folders(*direct)
    split_dir = _child(root, _SPLITS[key])
    if split_dir is not None:
        dirs = _pair_dirs(split_dir)
        if dirs is None:
            raise DatasetError(f"expected low/ and high/ (or Low/ and Normal/) folders in {split_dir}")
        return pair_folders(*dirs)
    pairs: list[ImagePair] = []
    for subset in sorted(p for p in root.iterdir() if p.is_dir()):
        sub_split = _child(subset, _SPLITS[key])
        dirs = _pair_dirs(sub_split) if sub_split is not None else None
        if dirs is not None:
            pairs += pair_folders(*dirs, prefix=f"{subset.name}/")
    if not pairs:
        raise DatasetError(
            f"no {key} pairs under {root}: expected low/+high/, our485/ or eval15/ (LOL), "
            f"Train/ or Test/ with Low/+Normal/ (LOL-v2), or subsets holding those"
        )
    return sorted(pairs, key=lambda p: p.name)


def check_pairs(
    pairs: Sequence[ImagePair], *, decode: bool = True, min_size: tuple[int, int] | None = None
) -> list[tuple[int, int]]:
    """Check that every pair can be read and that its two images have the same size.

    Returns each pair's ``(height, width)``; one :class:`DatasetError` names every bad file.

    Args:
        pairs: the pairs to check.
        decode: decode every image (catches truncated files); ``False`` reads only the headers.
        min_size: the least ``(height, width)`` of every image (e.g. the training patch).

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from flowkit.models.llflow.data import check_pairs, pair_folders, write_image
        >>> root = Path(tempfile.mkdtemp())
        >>> write_image(root / "low" / "1.png", torch.zeros(3, 4, 6))
        >>> write_image(root / "high" / "1.png", torch.zeros(3, 4, 5))
        >>> check_pairs(pair_folders(root / "low", root / "high"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        flowkit.models.llflow.data.pairs.DatasetError: 1 of 1 image pairs are unusable:
          - .../high/1.png is 4x5 (HxW) but its partner .../low/1.png is 4x6
    """
    if not pairs:
        raise DatasetError("expected at least one image pair, got none")
    problems: list[str] = []
    sizes: list[tuple[int, int]] = []
    bad_pairs = 0
    for pair in pairs:
        found: list[tuple[int, int]] = []
        for path in (pair.low, pair.high):
            try:
                found.append(tuple(read_image(path, dtype=torch.uint8).shape[1:]) if decode else image_size(path))
            except ImageReadError as exc:
                problems.append(str(exc))
        before = len(problems)
        if len(found) == 2 and found[0] != found[1]:
            problems.append(
                f"{pair.high} is {found[1][0]}x{found[1][1]} (HxW) but its partner {pair.low} "
                f"is {found[0][0]}x{found[0][1]}"
            )
        if found and min_size is not None and (found[0][0] < min_size[0] or found[0][1] < min_size[1]):
            problems.append(
                f"{pair.low} is {found[0][0]}x{found[0][1]} (HxW), smaller than the required "
                f"{min_size[0]}x{min_size[1]}"
            )
        if len(found) < 2 or len(problems) > before:
            bad_pairs += 1
        sizes.append(found[0] if found else (0, 0))
    if problems:
        raise DatasetError(f"{bad_pairs} of {len(pairs)} image pairs are unusable:", problems)
    return sizes
