"""The paired low/normal-light dataset: LOL-style training and evaluation items as tensors."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from flowkit.data.io import read_image, to_uint8
from flowkit.data.pairs import ImagePair, check_pairs, find_pairs, pair_folders

__all__ = ["PairedImageDataset", "item_generator"]

Equalizer = Callable[[Tensor], Tensor]


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The random generator that decides item ``index``'s crop and flip in ``epoch``.

    Its seed is a function of ``(seed, epoch, index)`` only, mixed by
    :class:`numpy.random.SeedSequence` into 64 bits, so an item is the same whichever
    DataLoader worker or rank loads it and in whatever order, and a resumed run sees exactly
    the items it would have seen.

    Args:
        seed: the dataset's seed (non-negative).
        epoch: the epoch (non-negative).
        index: the item's index (non-negative).

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


def _reference_equalizer() -> Equalizer:
    # Imported lazily: the model package is heavy and the dataset is useful without histeq.
    try:
        module = importlib.import_module("flowkit.models.llflow.histeq")
        return module.equalize_hist
    except (ImportError, AttributeError) as exc:
        raise ImportError(
            "histeq=True needs flowkit.models.llflow.histeq.equalize_hist, which is not available "
            f"({exc}); pass histeq=False, or a function of your own"
        ) from exc


class PairedImageDataset(Dataset):
    r"""Low/normal-light image pairs as training or evaluation items.

    Each item is a dict:

    - ``"low"``, ``"high"``: float32 (3, H, W) in [0, 1] (see :func:`~flowkit.data.read_image`);
    - ``"histeq"`` (unless ``histeq=False``): float32 (3, H, W) in [0, 1], the per-channel
      histogram equalization of the 8-bit low image (16-bit images rounded to 8 bit first),
      divided by 255, computed on the **full** image before any crop, as LLFlow's data pipeline
      does;
    - ``"name"``: the pair's name (the low file's stem).

    With ``patch_size`` set, the three images are cropped at the same random position, and with
    ``flip=True`` all three are flipped left-right with probability 0.5. The randomness of item
    ``i`` comes from :func:`item_generator` ``(seed, epoch, i)``, drawn in a fixed order (crop
    top, crop left, flip), so items are reproducible whatever the DataLoader's workers do. Call
    :meth:`set_epoch` before each epoch's iteration starts; DataLoader workers are given a copy of
    the dataset when an iterator is created, so with ``persistent_workers=True`` they do not see
    later calls (use non-persistent workers, or a new DataLoader per epoch).

    Every pair is checked when the dataset is built (:func:`~flowkit.data.check_pairs`): a
    missing partner, an unreadable file, a size mismatch, or an image smaller than the patch
    raises a :class:`~flowkit.data.DatasetError` naming the files before any training starts.

    Args:
        pairs: the image pairs (see :func:`~flowkit.data.find_pairs`); or use
            :meth:`from_root` / :meth:`from_folders`.
        patch_size: crop size ``(height, width)`` or one int for a square; ``None`` keeps full
            images.
        flip: random horizontal flips with probability 0.5.
        seed: seed of the crop and flip randomness.
        histeq: ``True`` for the LLFlow histogram equalization
            (``flowkit.models.llflow.histeq.equalize_hist``), ``False`` to leave it out, or a
            function mapping a uint8 (3, H, W) tensor to a uint8 (3, H, W) tensor.
        check: ``"decode"`` decodes every file at construction (catches truncated files);
            ``"header"`` reads only sizes (fast, for huge folders).
        cache: keep the decoded images (and histeq) in memory after first use. Each
            DataLoader worker holds its own cache.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from flowkit.data import PairedImageDataset, write_image
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
        if isinstance(patch_size, int):
            patch_size = (patch_size, patch_size)
        if patch_size is not None and (len(patch_size) != 2 or min(patch_size) < 1):
            raise ValueError(f"patch_size must be a positive int or (height, width), got {patch_size}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if check not in ("decode", "header"):
            raise ValueError(f"check must be 'decode' or 'header', got {check!r}")
        self.pairs = list(pairs)
        self.patch_size: tuple[int, int] | None = tuple(patch_size) if patch_size is not None else None
        self.flip = flip
        self.seed = seed
        self.epoch = 0
        if histeq is True:
            self.equalizer: Equalizer | None = _reference_equalizer()
        elif histeq is False:
            self.equalizer = None
        elif callable(histeq):
            self.equalizer = histeq
        else:
            raise TypeError(f"histeq must be True, False or a function, got {type(histeq).__name__}")
        self.sizes = check_pairs(self.pairs, decode=check == "decode", min_size=self.patch_size)
        self.cache = cache
        self._cache: dict[int, tuple[Tensor, Tensor, Tensor | None]] = {}

    @classmethod
    def from_root(cls, root: str | Path, split: str = "train", **kwargs) -> PairedImageDataset:
        """Build from a LOL / LOL-v2 / pair-folder root (see :func:`~flowkit.data.find_pairs`).

        Args:
            root: the dataset root.
            split: ``"train"`` or ``"test"``.
            **kwargs: the constructor's keyword arguments.

        Example:
            >>> import tempfile, torch
            >>> from pathlib import Path
            >>> from flowkit.data import PairedImageDataset, write_image
            >>> root = Path(tempfile.mkdtemp())
            >>> for side in ("Low", "Normal"):
            ...     write_image(root / "Test" / side / "r1.png", torch.rand(3, 4, 4))
            >>> len(PairedImageDataset.from_root(root, "test", histeq=False))
            1
        """
        return cls(find_pairs(root, split), **kwargs)

    @classmethod
    def from_folders(cls, low_dir: str | Path, high_dir: str | Path, **kwargs) -> PairedImageDataset:
        """Build from two folders paired by file name (see :func:`~flowkit.data.pair_folders`).

        Args:
            low_dir: folder of low-light images.
            high_dir: folder of normal-light images.
            **kwargs: the constructor's keyword arguments.

        Example:
            >>> import tempfile, torch
            >>> from pathlib import Path
            >>> from flowkit.data import PairedImageDataset, write_image
            >>> root = Path(tempfile.mkdtemp())
            >>> write_image(root / "dark" / "x.png", torch.rand(3, 4, 4))
            >>> write_image(root / "bright" / "x.png", torch.rand(3, 4, 4))
            >>> PairedImageDataset.from_folders(root / "dark", root / "bright", histeq=False)[0]["name"]
            'x'
        """
        return cls(pair_folders(low_dir, high_dir), **kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose crops and flips the next items use (like ``DistributedSampler``).

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
            low_u8 = to_uint8(low)
            equalized = self.equalizer(low_u8)
            if equalized.shape != low_u8.shape or equalized.dtype != torch.uint8:
                raise ValueError(
                    f"the histeq function must return a uint8 tensor of shape {tuple(low_u8.shape)}, "
                    f"got {equalized.dtype} {tuple(equalized.shape)}"
                )
            histeq = equalized.float() / 255
        loaded = (low, high, histeq)
        if self.cache:
            self._cache[index] = loaded
        return loaded

    def __getitem__(self, index: int) -> dict[str, Tensor | str]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} pairs")
        index %= len(self)
        low, high, histeq = self._load(index)
        images = [low, high] + ([histeq] if histeq is not None else [])
        if self.patch_size is not None or self.flip:
            generator = item_generator(self.seed, self.epoch, index)
            if self.patch_size is not None:
                (height, width), (ph, pw) = low.shape[1:], self.patch_size
                top = int(torch.randint(0, height - ph + 1, (1,), generator=generator))
                left = int(torch.randint(0, width - pw + 1, (1,), generator=generator))
                images = [im[:, top : top + ph, left : left + pw] for im in images]
            if self.flip and bool(torch.rand((), generator=generator) < 0.5):
                images = [im.flip(-1) for im in images]
        item: dict[str, Tensor | str] = {"low": images[0], "high": images[1]}
        if histeq is not None:
            item["histeq"] = images[2]
        item["name"] = self.pairs[index].name
        return item
