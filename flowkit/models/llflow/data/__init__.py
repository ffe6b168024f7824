"""Paired low/normal-light image data: reading images, finding pairs, the dataset, synthetic pairs.

The modules: ``io`` (Pillow, the ``images`` extra), ``pairs`` (LOL, LOL-v2, any two folders),
``dataset`` (:class:`PairedImageDataset`, :class:`SyntheticPairDataset`, :class:`CombinedDataset`),
``synthetic``, ``calibration`` (fitting the synthesizer to real pairs) and ``scenes``.
"""

from __future__ import annotations

from flowkit.models.llflow.data.dataset import CombinedDataset, PairedImageDataset, SyntheticPairDataset, item_generator
from flowkit.models.llflow.data.io import IMAGE_SUFFIXES, ImageReadError, image_size, read_image, to_uint8, write_image
from flowkit.models.llflow.data.pairs import DatasetError, ImagePair, check_pairs, find_pairs, pair_folders
from flowkit.models.llflow.data.scenes import make_scene, write_scenes
from flowkit.models.llflow.data.synthetic import (
    LowLightMixture,
    LowLightParams,
    LowLightSynthesizer,
    darken,
    write_synthetic_pairs,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "CombinedDataset",
    "DatasetError",
    "ImagePair",
    "ImageReadError",
    "LowLightMixture",
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
