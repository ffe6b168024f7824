"""The paired low/normal-light dataset: LOL-style training and evaluation items as tensors."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from flowkit.models.llflow.data.io import image_size, read_image, to_uint8
from flowkit.models.llflow.data.pairs import DatasetError, ImagePair, check_pairs, find_pairs, image_files, pair_folders
from flowkit.models.llflow.histeq import equalize_hist

__all__ = ["CombinedDataset", "PairedImageDataset", "SyntheticPairDataset", "item_generator"]

Equalizer = Callable[[Tensor], Tensor]


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The random generator that decides item ``index``'s crop and flip in ``epoch``.

    Seeded from the non-negative ``(seed, epoch, index)`` only, so an item is the same whichever
    worker or rank loads it, and a resumed run sees the same items.

    Example:
        >>> a, b = item_generator(0, 1, 2), item_generator(0, 1, 2)
        >>> torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))
        True
    """
    if min(seed, epoch, index) < 0:
        raise ValueError(f"seed, epoch and index must be non-negative, got {seed}, {epoch}, {index}")
    words = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator()
    # manual_seed takes a signed 64-bit value: keep 63 bits.
    generator.manual_seed(((int(words[0]) << 32) | int(words[1])) & (2**63 - 1))
    return generator


class PairedImageDataset(Dataset):
    r"""Low/normal-light image pairs as training or evaluation items.

    Items are dicts: ``"low"`` and ``"high"``, float32 (3, H, W) in [0, 1]; ``"histeq"``, the
    low image's equalization, computed on the **full** image before the crop (as LLFlow's pipeline
    does); and ``"name"``. Call :meth:`set_epoch` before each epoch (persistent DataLoader workers
    do not see it). Every pair is checked at construction, so a bad file raises a
    :class:`~flowkit.models.llflow.data.DatasetError` before training starts.

    Args:
        pairs: the image pairs (:func:`~flowkit.models.llflow.data.find_pairs`); or use
            :meth:`from_root` / :meth:`from_folders`.
        patch_size: crop size ``(height, width)`` or one int; ``None`` keeps full images.
        flip: random left-right flips with probability 0.5.
        seed: seed of the crops and flips (:func:`item_generator`).
        histeq: ``True`` for LLFlow's equalization, ``False`` for none, or a function from a
            uint8 (3, H, W) tensor to another.
        check: ``"decode"`` decodes every file (catches truncated files); ``"header"`` reads sizes.
        cache: keep decoded images in memory (one cache per DataLoader worker).

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from flowkit.models.llflow.data import PairedImageDataset, write_image
        >>> root = Path(tempfile.mkdtemp())
        >>> for side in ("low", "high"):
        ...     write_image(root / side / "a.png", torch.rand(3, 12, 16))
        >>> data = PairedImageDataset.from_root(root, patch_size=8, flip=True, seed=0, histeq=False)
        >>> item = data[0]
        >>> item["name"], item["low"].shape, item["high"].dtype
        ('a', torch.Size([3, 8, 8]), torch.float32)
    """

    def __init__(
        self,
        pairs: Sequence[ImagePair],
        *,
        patch_size: int | tuple[int, int] | None = None,
        flip: bool = False,
        seed: int = 0,
        histeq: bool | Equalizer = True,
        check: str = "decode",
        cache: bool = False,
    ) -> None:
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if check not in ("decode", "header"):
            raise ValueError(f"check must be 'decode' or 'header', got {check!r}")
        self.pairs = list(pairs)
        self.patch_size = _patch_option(patch_size)
        self.flip = flip
        self.seed = seed
        self.epoch = 0
        self.equalizer = _equalizer_option(histeq)
        self.sizes = check_pairs(self.pairs, decode=check == "decode", min_size=self.patch_size)
        self.cache = cache
        self._cache: dict[int, tuple[Tensor, Tensor, Tensor | None]] = {}

    @classmethod
    def from_root(cls, root: str | Path, split: str = "train", **kwargs) -> PairedImageDataset:
        """Build from the ``"train"`` or ``"test"`` split of a LOL / LOL-v2 / pair-folder root
        (:func:`~flowkit.models.llflow.data.find_pairs`); ``kwargs`` go to the constructor.

        Example:
            >>> import tempfile, torch
            >>> from pathlib import Path
            >>> from flowkit.models.llflow.data import PairedImageDataset, write_image
            >>> root = Path(tempfile.mkdtemp())
            >>> for side in ("Low", "Normal"):
            ...     write_image(root / "Test" / side / "r1.png", torch.rand(3, 4, 4))
            >>> len(PairedImageDataset.from_root(root, "test", histeq=False))
            1
        """
        return cls(find_pairs(root, split), **kwargs)

    @classmethod
    def from_folders(cls, low_dir: str | Path, high_dir: str | Path, **kwargs) -> PairedImageDataset:
        """Build from two folders paired by file name (see :func:`~flowkit.models.llflow.data.pair_folders`).

        Example:
            >>> import tempfile, torch
            >>> from pathlib import Path
            >>> from flowkit.models.llflow.data import PairedImageDataset, write_image
            >>> root = Path(tempfile.mkdtemp())
            >>> write_image(root / "dark" / "x.png", torch.rand(3, 4, 4))
            >>> write_image(root / "bright" / "x.png", torch.rand(3, 4, 4))
            >>> PairedImageDataset.from_folders(root / "dark", root / "bright", histeq=False)[0]["name"]
            'x'
        """
        return cls(pair_folders(low_dir, high_dir), **kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Select the (non-negative) epoch whose crops and flips the next items use (like ``DistributedSampler``).

        Example:
            >>> data = PairedImageDataset.__new__(PairedImageDataset)
            >>> data.set_epoch(3); data.epoch
            3
        """
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int) -> tuple[Tensor, Tensor, Tensor | None]:
        if index in self._cache:
            return self._cache[index]
        pair = self.pairs[index]
        low = read_image(pair.low)
        high = read_image(pair.high)
        histeq = None
        if self.equalizer is not None:
            # Equalised on the full image, before the crop (a crop has a different histogram).
            histeq = _equalize(self.equalizer, to_uint8(low))
        loaded = (low, high, histeq)
        if self.cache:
            self._cache[index] = loaded
        return loaded

    def __getitem__(self, index: int) -> dict[str, Tensor | str]:
        index = _check_index(index, len(self))
        low, high, histeq = self._load(index)
        generator = item_generator(self.seed, self.epoch, index) if self.patch_size or self.flip else None
        return _item(low, high, histeq, self.pairs[index].name, self.patch_size, self.flip, generator)


def _item_names(paths: Sequence[Path]) -> list[str]:
    # Stems; where two clash, every name is the path under the common folder joined with "_".
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    resolved = [p.resolve() for p in paths]
    root = Path(os.path.commonpath([p.parent for p in resolved]))
    return ["_".join(p.relative_to(root).with_suffix("").parts) for p in resolved]


def _check_index(index: int, size: int) -> int:
    if not -size <= index < size:
        raise IndexError(f"index {index} is out of range for a dataset of {size} pairs")
    return index % size


def _item(
    low: Tensor, high: Tensor, histeq: Tensor | None, name: str, patch_size: tuple[int, int] | None, flip: bool,
    generator: torch.Generator | None,
) -> dict[str, Tensor | str]:
    images = [low, high] + ([histeq] if histeq is not None else [])
    if generator is not None:
        if patch_size is not None:
            (height, width), (ph, pw) = low.shape[1:], patch_size
            top = int(torch.randint(0, height - ph + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - pw + 1, (1,), generator=generator))
            images = [im[:, top : top + ph, left : left + pw] for im in images]
        if flip and bool(torch.rand((), generator=generator) < 0.5):
            images = [im.flip(-1) for im in images]
    item: dict[str, Tensor | str] = {"low": images[0], "high": images[1]}
    if histeq is not None:
        item["histeq"] = images[2]
    item["name"] = name
    return item


def _equalize(equalizer: Equalizer, low_u8: Tensor) -> Tensor:
    equalized = equalizer(low_u8)
    if equalized.shape != low_u8.shape or equalized.dtype != torch.uint8:
        raise ValueError(
            f"the histeq function must return a uint8 tensor of shape {tuple(low_u8.shape)}, "
            f"got {equalized.dtype} {tuple(equalized.shape)}"
        )
    return equalized.float() / 255


def _equalizer_option(histeq: bool | Equalizer) -> Equalizer | None:
    if histeq is True:
        return equalize_hist
    if histeq is False:
        return None
    if callable(histeq):
        return histeq
    raise TypeError(f"histeq must be True, False or a function, got {type(histeq).__name__}")


def _patch_option(patch_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if isinstance(patch_size, int):
        patch_size = (patch_size, patch_size)
    if patch_size is not None and (len(patch_size) != 2 or min(patch_size) < 1):
        raise ValueError(f"patch_size must be a positive int or (height, width), got {patch_size}")
    return tuple(patch_size) if patch_size is not None else None  # type: ignore[return-value]


class SyntheticPairDataset(Dataset):
    r"""Normal-light photographs darkened on the fly: a fresh degradation for every item and epoch.

    Item ``i`` of epoch ``e`` darkens photograph ``i`` with draws from :func:`item_generator`
    ``(seed, e, i)``, then crops and flips. Items are dicts as :class:`PairedImageDataset`'s.

    Args:
        images: the normal-light image files.
        synthesizer: the degradation (e.g. :meth:`~flowkit.models.llflow.data.LowLightSynthesizer.lol`).
        patch_size, flip, histeq: as for :class:`PairedImageDataset`.
        seed: seed of the degradations, crops and flips.
        multiple_of: centre-crop each photograph once to a multiple of this (8 for LLFlow).
        cache: keep the decoded photographs in memory (uint8).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from flowkit.models.llflow.data import LowLightSynthesizer, SyntheticPairDataset, write_scenes
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = write_scenes(folder, 2, 20, 20)
        >>> data = SyntheticPairDataset.from_folder(folder, LowLightSynthesizer.lol(), patch_size=8, seed=1)
        >>> first = data[0]["low"]
        >>> data.set_epoch(1)
        >>> len(data), first.shape, bool((data[0]["low"] != first).any())
        (2, torch.Size([3, 8, 8]), True)
    """

    def __init__(
        self,
        images: Sequence[str | Path],
        synthesizer,
        *,
        patch_size: int | tuple[int, int] | None = None,
        flip: bool = False,
        seed: int = 0,
        histeq: bool | Equalizer = True,
        multiple_of: int = 8,
        cache: bool = True,
    ) -> None:
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if multiple_of < 1:
            raise ValueError(f"multiple_of must be a positive int, got {multiple_of}")
        if not callable(synthesizer):
            raise TypeError(f"synthesizer must be a LowLightSynthesizer (callable), got {type(synthesizer).__name__}")
        self.images = [Path(p) for p in images]
        if not self.images:
            raise DatasetError("SyntheticPairDataset needs at least one normal-light image")
        self.names = _item_names(self.images)
        self.synthesizer = synthesizer
        self.patch_size = _patch_option(patch_size)
        self.flip = flip
        self.seed = seed
        self.epoch = 0
        self.multiple_of = multiple_of
        self.equalizer = _equalizer_option(histeq)
        self.cache = cache
        self._cache: dict[int, Tensor] = {}
        minimum = self.patch_size or (multiple_of, multiple_of)
        problems = []
        for path in self.images:
            height, width = image_size(path)  # raises ImageReadError naming the file
            if height - height % multiple_of < minimum[0] or width - width % multiple_of < minimum[1]:
                problems.append(f"{path} ({height}x{width}) is smaller than {minimum[0]}x{minimum[1]}")
        if problems:
            raise DatasetError(f"{len(problems)} images are too small", problems)

    @classmethod
    def from_folder(cls, folder: str | Path, synthesizer, *, recursive: bool = True, **kwargs) -> SyntheticPairDataset:
        """All images in ``folder`` (and its sub-folders unless ``recursive=False``), sorted.

        Item names are the stems; where two share a stem, every name is the path under
        ``folder`` joined with ``_`` (``day_0001``, ``night_0001``).

        Example:
            >>> import tempfile
            >>> from pathlib import Path
            >>> from flowkit.models.llflow.data import LowLightSynthesizer, SyntheticPairDataset
            >>> SyntheticPairDataset.from_folder(Path(tempfile.mkdtemp()), LowLightSynthesizer())
            Traceback (most recent call last):
            ...
            flowkit.models.llflow.data.pairs.DatasetError: expected image files in ..., found none
        """
        return cls(image_files(folder, recursive=recursive), synthesizer, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose degradations, crops and flips the next items use (non-negative)."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def _high(self, index: int) -> Tensor:
        if index in self._cache:
            return self._cache[index]
        high = read_image(self.images[index], dtype=torch.uint8)
        height, width = high.shape[1:]
        crop_h, crop_w = height - height % self.multiple_of, width - width % self.multiple_of
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        high = high[:, top : top + crop_h, left : left + crop_w].contiguous()
        if self.cache:
            self._cache[index] = high
        return high

    def __getitem__(self, index: int) -> dict[str, Tensor | str]:
        index = _check_index(index, len(self))
        high_u8 = self._high(index)
        generator = item_generator(self.seed, self.epoch, index)
        low_u8, _ = self.synthesizer(high_u8, generator=generator)
        histeq = _equalize(self.equalizer, low_u8) if self.equalizer is not None else None
        name = self.names[index]
        return _item(low_u8.float() / 255, high_u8.float() / 255, histeq, name, self.patch_size, self.flip, generator)


class CombinedDataset(Dataset):
    """Several datasets one after another, each repeated a number of times, with ``set_epoch``.

    Use it to mix a few real pairs into a large synthetic set.

    Args:
        parts: ``(dataset, repeats)`` pairs, in order; the datasets must keep their lengths.

    Example:
        >>> from flowkit.models.llflow.data import CombinedDataset
        >>> data = CombinedDataset([(["a", "b"], 1), (["c"], 3)])
        >>> len(data), [data[i] for i in range(len(data))]
        (5, ['a', 'b', 'c', 'c', 'c'])
    """

    def __init__(self, parts: Sequence[tuple[Sequence, int]]) -> None:
        if not parts:
            raise ValueError("CombinedDataset needs at least one (dataset, repeats) part")
        for _, repeats in parts:
            if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
                raise ValueError(f"repeats must be a positive int, got {repeats!r}")
        self.parts = list(parts)
        self._index: list[tuple[int, int]] = [
            (part, item) for part, (data, repeats) in enumerate(self.parts) for _ in range(repeats)
            for item in range(len(data))
        ]

    def set_epoch(self, epoch: int) -> None:
        """Pass ``epoch`` on to every part that has a ``set_epoch``."""
        for data, _ in self.parts:
            if hasattr(data, "set_epoch"):
                data.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int):
        part, item = self._index[_check_index(index, len(self))]
        return self.parts[part][0][item]
