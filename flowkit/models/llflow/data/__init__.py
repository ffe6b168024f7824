"""Paired low/normal-light image data: reading images, finding pairs, the dataset, synthetic pairs.

- :mod:`flowkit.models.llflow.data.io`: :func:`read_image`, :func:`write_image`, :func:`to_uint8`.
- :mod:`flowkit.models.llflow.data.pairs`: :func:`find_pairs` (LOL, LOL-v2, any two folders), :func:`check_pairs`.
- :mod:`flowkit.models.llflow.data.dataset`: :class:`PairedImageDataset`, the training/evaluation items.
- :mod:`flowkit.models.llflow.data.dataset`: also :class:`SyntheticPairDataset` (photos darkened on the fly)
  and :class:`CombinedDataset`.
- :mod:`flowkit.models.llflow.data.synthetic`: :class:`LowLightSynthesizer` and :func:`write_synthetic_pairs`.
- :mod:`flowkit.models.llflow.data.calibration`: fitting the synthesizer to real low/normal-light pairs.
- :mod:`flowkit.models.llflow.data.scenes`: :func:`make_scene`, procedural images for when no photos exist.

Images are read with Pillow (the ``images`` extra).
"""

from __future__ import annotations

from flowkit.models.llflow.data.dataset import CombinedDataset, PairedImageDataset, SyntheticPairDataset, item_generator
from flowkit.models.llflow.data.io import IMAGE_SUFFIXES, ImageReadError, image_size, read_image, to_uint8, write_image
from flowkit.models.llflow.data.pairs import DatasetError, ImagePair, check_pairs, find_pairs, pair_folders
from flowkit.models.llflow.data.scenes import make_scene, write_scenes
from flowkit.models.llflow.data.synthetic import LowLightParams, LowLightSynthesizer, darken, write_synthetic_pairs

__all__ = [
    "IMAGE_SUFFIXES",
    "CombinedDataset",
    "DatasetError",
    "ImagePair",
    "ImageReadError",
    "LowLightParams",
    "LowLightSynthesizer",
    "PairedImageDataset",
    "SyntheticPairDataset",
    "check_pairs",
    "darken",
    "find_pairs",
    "image_size",
    "item_generator",
    "make_scene",
    "pair_folders",
    "read_image",
    "to_uint8",
    "write_image",
    "write_scenes",
    "write_synthetic_pairs",
]
