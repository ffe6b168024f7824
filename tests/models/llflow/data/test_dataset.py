"""The paired dataset: items, histeq on the full image, shared crops and flips, seeding, workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from flowkit.models.llflow.data import DatasetError, PairedImageDataset, item_generator, read_image
from flowkit.models.llflow.histeq import equalize_hist

from .helpers import random_rgb, save_rgb

HEIGHT, WIDTH, PATCH = 24, 32, 8


@pytest.fixture
def pair_root(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        # Dark, skewed low images: equalization then changes them a lot, and a crop's histogram
        # differs from the full image's.
        low = (rng.random((HEIGHT, WIDTH, 3)) ** 3 * 60).astype(np.uint8)
        low[: HEIGHT // 2] //= 3
        save_rgb(tmp_path / "low" / f"{i}.png", low)
        save_rgb(tmp_path / "high" / f"{i}.png", random_rgb(rng, HEIGHT, WIDTH))
    return tmp_path


def locate(patch: torch.Tensor, full: torch.Tensor) -> tuple[int, int, bool]:
    """Find where (and whether flipped) ``patch`` was cut from ``full``, by exhaustive search."""
    ph, pw = patch.shape[1:]
    found = []
    for flipped in (False, True):
        candidate = patch.flip(-1) if flipped else patch
        for top in range(full.shape[1] - ph + 1):
            for left in range(full.shape[2] - pw + 1):
                if torch.equal(full[:, top : top + ph, left : left + pw], candidate):
                    found.append((top, left, flipped))
    assert len(found) == 1, f"patch found at {found}"
    return found[0]


def test_full_items_match_the_files(pair_root):
    data = PairedImageDataset.from_root(pair_root, "test")
    assert len(data) == 4
    item = data[2]
    assert set(item) == {"low", "high", "histeq", "name"} and item["name"] == "2"
    for key in ("low", "high", "histeq"):
        assert item[key].dtype == torch.float32 and item[key].shape == (3, HEIGHT, WIDTH)
        assert item[key].min() >= 0 and item[key].max() <= 1
    assert torch.equal(item["low"], read_image(pair_root / "low" / "2.png"))
    assert torch.equal(item["high"], read_image(pair_root / "high" / "2.png"))
    low_u8 = read_image(pair_root / "low" / "2.png", dtype=torch.uint8)
    assert torch.equal(item["histeq"], equalize_hist(low_u8).float() / 255)
    assert torch.equal(data[-1]["low"], data[3]["low"])
    with pytest.raises(IndexError, match="out of range"):
        data[4]


def test_crop_and_flip_are_shared_and_histeq_comes_from_the_full_image(pair_root):
    data = PairedImageDataset.from_root(pair_root, patch_size=PATCH, flip=True, seed=3)
    flips, histeq_of_crop_differs = set(), False
    for epoch in range(3):
        data.set_epoch(epoch)
        for index in range(len(data)):
            item = data[index]
            low = read_image(pair_root / "low" / f"{index}.png")
            high = read_image(pair_root / "high" / f"{index}.png")
            histeq_full = equalize_hist(read_image(pair_root / "low" / f"{index}.png", dtype=torch.uint8))
            top, left, flipped = locate(item["low"], low)
            flips.add(flipped)

            def cut(image, top=top, left=left, flipped=flipped):
                patch = image[:, top : top + PATCH, left : left + PATCH]
                return patch.flip(-1) if flipped else patch

            assert item["low"].shape == item["high"].shape == item["histeq"].shape == (3, PATCH, PATCH)
            assert torch.equal(item["high"], cut(high))
            assert torch.equal(item["histeq"], cut(histeq_full).float() / 255)
            histeq_of_crop = equalize_hist((cut(low) * 255).round().to(torch.uint8)).float() / 255
            histeq_of_crop_differs |= not torch.equal(histeq_of_crop, item["histeq"])
    assert flips == {False, True}
    assert histeq_of_crop_differs


def test_items_are_a_function_of_seed_epoch_and_index(pair_root):
    def items(seed, epoch):
        data = PairedImageDataset.from_root(pair_root, patch_size=PATCH, flip=True, seed=seed, histeq=False)
        data.set_epoch(epoch)
        return torch.stack([data[i]["low"] for i in range(len(data))])

    assert torch.equal(items(7, 0), items(7, 0))
    assert torch.equal(items(7, 2), items(7, 2))
    assert not torch.equal(items(7, 0), items(7, 1))
    assert not torch.equal(items(7, 0), items(8, 0))
    # Reading the same index out of order, or twice, gives the same item.
    data = PairedImageDataset.from_root(pair_root, patch_size=PATCH, flip=True, seed=7, histeq=False)
    assert torch.equal(data[2]["low"], items(7, 0)[2]) and torch.equal(data[2]["low"], data[2]["low"])


def test_dataloader_workers_give_the_same_batches(pair_root):
    data = PairedImageDataset.from_root(pair_root, patch_size=PATCH, flip=True, seed=1)
    data.set_epoch(5)

    def batches(workers):
        loader = DataLoader(data, batch_size=2, num_workers=workers)
        return [(b["low"], b["histeq"], b["name"]) for b in loader]

    serial, parallel = batches(0), batches(2)
    assert [names for _, _, names in serial] == [["0", "1"], ["2", "3"]]
    for (low_a, he_a, names_a), (low_b, he_b, names_b) in zip(serial, parallel, strict=True):
        assert torch.equal(low_a, low_b) and torch.equal(he_a, he_b) and names_a == names_b


def test_flip_probability_is_one_half_and_crops_cover_the_image(tmp_path):
    ramp = np.tile(np.arange(16, dtype=np.uint8)[None, :, None] * 10, (4, 1, 3))
    save_rgb(tmp_path / "low" / "r.png", ramp)
    save_rgb(tmp_path / "high" / "r.png", ramp)
    data = PairedImageDataset.from_root(
        tmp_path, patch_size=(4, 4), flip=True, seed=0, histeq=False, cache=True
    )
    flipped, lefts = 0, set()
    for epoch in range(400):
        data.set_epoch(epoch)
        row = data[0]["low"][0, 0]
        flipped += bool(row[0] > row[-1])
        lefts.add(int(row.min() * 255 / 10 + 0.5))
    assert 160 <= flipped <= 240  # Binomial(400, 0.5): about 4 standard deviations either side
    assert lefts == set(range(13))


def test_construction_fails_early_naming_the_bad_files(pair_root):
    save_rgb(pair_root / "high" / "1.png", random_rgb(np.random.default_rng(1), HEIGHT, WIDTH + 1))
    (pair_root / "low" / "2.png").write_bytes(b"broken")
    (pair_root / "high" / "3.png").unlink()
    with pytest.raises(DatasetError) as info:
        PairedImageDataset.from_root(pair_root)
    assert "low/3.png has no partner" in str(info.value)
    (pair_root / "low" / "3.png").unlink()
    with pytest.raises(DatasetError) as info:
        PairedImageDataset.from_root(pair_root)
    message = str(info.value)
    assert "high/1.png is 24x33" in message and "low/2.png" in message


def test_patch_larger_than_an_image_is_named_at_construction(pair_root):
    with pytest.raises(DatasetError, match=r"low[/\\]0\.png is 24x32 .*required 25x25"):
        PairedImageDataset.from_root(pair_root, patch_size=25)


def test_argument_checks_and_custom_histeq(pair_root):
    with pytest.raises(ValueError, match="patch_size"):
        PairedImageDataset.from_root(pair_root, patch_size=0)
    with pytest.raises(ValueError, match="check"):
        PairedImageDataset.from_root(pair_root, check="none")
    with pytest.raises(TypeError, match="histeq"):
        PairedImageDataset.from_root(pair_root, histeq="yes")
    inverted = PairedImageDataset.from_root(pair_root, histeq=lambda u8: 255 - u8)
    assert torch.allclose(inverted[0]["histeq"], 1 - inverted[0]["low"], atol=1e-6)
    wrong = PairedImageDataset.from_root(pair_root, histeq=lambda u8: u8.float())
    with pytest.raises(ValueError, match="uint8"):
        wrong[0]


def test_item_generator_rejects_negative_values():
    with pytest.raises(ValueError, match="non-negative"):
        item_generator(0, -1, 0)


def test_real_lol_pair_items(shared_dir):
    data = PairedImageDataset.from_root(shared_dir / "data" / "LOL", "test", patch_size=160, flip=True)
    item = data[0]
    assert item["name"] == "778" and item["low"].shape == (3, 160, 160)
    full = PairedImageDataset.from_root(shared_dir / "data" / "LOL", "test")[0]
    # LOL's low image is dark (mean 7.3/255) and its GT bright (87.2/255); equalization brightens.
    assert abs(full["low"].mean().item() * 255 - 7.3) < 0.05
    assert abs(full["high"].mean().item() * 255 - 87.2) < 0.05
    assert full["histeq"].mean() > 0.4


def test_synthetic_items_are_reproducible_and_fresh_each_epoch(tmp_path):
    from flowkit.models.llflow.data import LowLightSynthesizer, SyntheticPairDataset, write_scenes
    from flowkit.models.llflow.histeq import equalize_hist

    write_scenes(tmp_path / "photos", 3, 44, 52, seed=1)
    make = lambda: SyntheticPairDataset.from_folder(  # noqa: E731
        tmp_path / "photos", LowLightSynthesizer.lol(), patch_size=16, flip=True, seed=4)
    a, b = make(), make()
    first = a[1]
    assert torch.equal(first["low"], b[1]["low"]) and torch.equal(first["histeq"], b[1]["histeq"])
    a.set_epoch(1)
    assert not torch.equal(a[1]["low"], first["low"])
    assert first["low"].shape == first["high"].shape == first["histeq"].shape == (3, 16, 16)
    assert first["low"].mean() < 0.5 * first["high"].mean()
    # The equalization is of the whole low image (centre-cropped to 40x48), then cropped.
    whole = SyntheticPairDataset.from_folder(tmp_path / "photos", LowLightSynthesizer.lol(), seed=4,
                                             histeq=False)
    generator = item_generator(4, 0, 1)
    low_u8, _ = LowLightSynthesizer.lol()(whole._high(1), generator=generator)
    top = int(torch.randint(0, 40 - 16 + 1, (1,), generator=generator))
    left = int(torch.randint(0, 48 - 16 + 1, (1,), generator=generator))
    flipped = bool(torch.rand((), generator=generator) < 0.5)
    expected = (equalize_hist(low_u8).float() / 255)[:, top : top + 16, left : left + 16]
    assert torch.equal(first["histeq"], expected.flip(-1) if flipped else expected)


def test_synthetic_dataset_rejects_small_or_missing_images(tmp_path):
    from flowkit.models.llflow.data import DatasetError, LowLightSynthesizer, SyntheticPairDataset, write_scenes

    write_scenes(tmp_path / "photos", 1, 12, 12)
    with pytest.raises(DatasetError, match="smaller than 16x16"):
        SyntheticPairDataset.from_folder(tmp_path / "photos", LowLightSynthesizer(), patch_size=16)
    with pytest.raises(DatasetError, match="found none"):
        SyntheticPairDataset.from_folder(tmp_path / "absent", LowLightSynthesizer())
    with pytest.raises(TypeError, match="synthesizer"):
        SyntheticPairDataset.from_folder(tmp_path / "photos", "lol")


def test_synthetic_items_of_the_same_stem_in_different_folders_get_different_names(tmp_path):
    from flowkit.models.llflow.data import LowLightSynthesizer, SyntheticPairDataset, write_scenes

    write_scenes(tmp_path / "day", 1, 16, 16)
    write_scenes(tmp_path / "night", 1, 16, 16)
    write_scenes(tmp_path / "night" / "rain", 1, 16, 16)
    data = SyntheticPairDataset.from_folder(tmp_path, LowLightSynthesizer(), histeq=False)
    assert [data[i]["name"] for i in range(len(data))] == [
        "day_scene_0000", "night_rain_scene_0000", "night_scene_0000"]
    # Distinct stems keep their short names, wherever the files are.
    (tmp_path / "night" / "scene_0000.png").rename(tmp_path / "night" / "other.png")
    (tmp_path / "night" / "rain" / "scene_0000.png").rename(tmp_path / "night" / "rain" / "third.png")
    data = SyntheticPairDataset.from_folder(tmp_path, LowLightSynthesizer(), histeq=False)
    assert sorted(data.names) == ["other", "scene_0000", "third"]


def test_combined_dataset_repeats_parts_and_forwards_the_epoch(tmp_path):
    from flowkit.models.llflow.data import CombinedDataset, LowLightSynthesizer, SyntheticPairDataset, write_scenes

    write_scenes(tmp_path / "photos", 2, 16, 16)
    synthetic = SyntheticPairDataset.from_folder(tmp_path / "photos", LowLightSynthesizer(), seed=1)
    combined = CombinedDataset([(synthetic, 1), (["real"], 3)])
    assert len(combined) == 5 and combined[-1] == "real" and combined[0]["name"] == "scene_0000"
    combined.set_epoch(2)
    assert synthetic.epoch == 2
    with pytest.raises(ValueError, match="positive int"):
        CombinedDataset([(synthetic, 0)])
    with pytest.raises(IndexError):
        combined[5]
