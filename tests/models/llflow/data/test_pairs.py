"""Finding pairs in LOL, LOL-v2 and plain layouts; errors name every offending file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flowkit.models.llflow.data import DatasetError, check_pairs, find_pairs, pair_folders

from .helpers import random_rgb, save_rgb

RNG = np.random.default_rng(0)


def make_pair_folder(folder: Path, names_low, names_high=None, *, low="low", high="high", size=(6, 8)):
    for name in names_low:
        save_rgb(folder / low / name, random_rgb(RNG, *size))
    for name in names_high if names_high is not None else names_low:
        save_rgb(folder / high / name, random_rgb(RNG, *size))


def test_lol_v1_layout_gives_sorted_train_and_test_pairs(tmp_path):
    make_pair_folder(tmp_path / "our485", ["5.png", "2.png", "10.png"])
    make_pair_folder(tmp_path / "eval15", ["778.png", "1.png"])
    train = find_pairs(tmp_path, "train")
    assert [p.name for p in train] == ["10", "2", "5"]
    assert all(p.low.parent.name == "low" and p.high.parent.name == "high" for p in train)
    assert all(p.low.name == p.high.name for p in train)
    assert [p.name for p in find_pairs(tmp_path, "test")] == ["1", "778"]
    assert [p.name for p in find_pairs(tmp_path, "val")] == ["1", "778"]


def test_lol_v2_real_names_pair_across_prefixes_and_case(tmp_path):
    make_pair_folder(
        tmp_path / "Train",
        ["low00002.png", "low00001.png"],
        ["normal00001.png", "normal00002.png"],
        low="Low",
        high="Normal",
    )
    # Some copies of LOL-v2 name the test folders in lower case with "high".
    make_pair_folder(tmp_path / "Test", ["low00690.png"], ["normal00690.png"], low="low", high="high")
    train = find_pairs(tmp_path, "train")
    assert [(p.low.name, p.high.name) for p in train] == [
        ("low00001.png", "normal00001.png"),
        ("low00002.png", "normal00002.png"),
    ]
    assert [p.high.name for p in find_pairs(tmp_path, "test")] == ["normal00690.png"]


def test_lol_v2_root_combines_subsets_with_prefixed_names(tmp_path):
    real = tmp_path / "Real_captured" / "Train"
    make_pair_folder(real, ["low00001.png"], ["normal00001.png"], low="Low", high="Normal")
    make_pair_folder(tmp_path / "Synthetic" / "Train", ["r0001.png"], low="Low", high="Normal")
    assert [p.name for p in find_pairs(tmp_path)] == ["Real_captured/low00001", "Synthetic/r0001"]


def test_a_pair_folder_root_and_explicit_folders(tmp_path):
    make_pair_folder(tmp_path / "pairs", ["a.png", "b.png"])
    assert [p.name for p in find_pairs(tmp_path / "pairs", "test")] == ["a", "b"]
    make_pair_folder(tmp_path / "x", ["c.png"], low="dark", high="bright")
    pairs = pair_folders(tmp_path / "x" / "dark", tmp_path / "x" / "bright")
    assert [(p.name, p.high) for p in pairs] == [("c", tmp_path / "x" / "bright" / "c.png")]


def test_pairing_ignores_the_extension(tmp_path):
    save_rgb(tmp_path / "low" / "a.png", random_rgb(RNG, 4, 4))
    save_rgb(tmp_path / "high" / "a.jpg", random_rgb(RNG, 4, 4))
    (tmp_path / "low" / "notes.txt").write_text("not an image")
    assert [p.high.name for p in find_pairs(tmp_path)] == ["a.jpg"]


def test_missing_partners_are_all_named(tmp_path):
    make_pair_folder(tmp_path, ["1.png", "2.png", "3.png"], ["1.png", "4.png"])
    with pytest.raises(DatasetError) as info:
        find_pairs(tmp_path)
    message = str(info.value)
    for name in ("low/2.png", "low/3.png", "high/4.png"):
        assert name in message
    assert len(info.value.problems) == 3


def test_duplicate_names_empty_folders_and_unknown_layouts_are_errors(tmp_path):
    make_pair_folder(tmp_path / "dup", ["a.png", "a.jpg"], ["a.png"])
    with pytest.raises(DatasetError, match=r"a\.(jpg|png) and .*a\.(jpg|png) have the same name"):
        find_pairs(tmp_path / "dup")
    (tmp_path / "empty" / "low").mkdir(parents=True)
    (tmp_path / "empty" / "high").mkdir()
    with pytest.raises(DatasetError, match=r"empty[/\\]low"):
        find_pairs(tmp_path / "empty")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DatasetError, match="our485"):
        find_pairs(tmp_path / "nothing")
    with pytest.raises(DatasetError, match="dataset folder"):
        find_pairs(tmp_path / "absent")
    with pytest.raises(ValueError, match="split"):
        find_pairs(tmp_path / "dup", "training")


def test_check_pairs_names_size_mismatches_and_unreadable_files_all_at_once(tmp_path):
    make_pair_folder(tmp_path, ["good.png", "small.png", "broken.png"])
    save_rgb(tmp_path / "high" / "small.png", random_rgb(RNG, 6, 7))
    (tmp_path / "low" / "broken.png").write_bytes(b"\x89PNG garbage")
    pairs = find_pairs(tmp_path)
    with pytest.raises(DatasetError) as info:
        check_pairs(pairs)
    message = str(info.value)
    assert "2 of 3 image pairs" in message
    assert "high/small.png is 6x7" in message and "low/small.png is 6x8" in message
    assert "low/broken.png" in message
    assert "good.png" not in message


def test_check_pairs_decode_catches_truncation_that_headers_miss(tmp_path):
    make_pair_folder(tmp_path, ["a.png"], size=(48, 48))
    path = tmp_path / "high" / "a.png"
    path.write_bytes(path.read_bytes()[:-200])
    pairs = find_pairs(tmp_path)
    assert check_pairs(pairs, decode=False) == [(48, 48)]
    with pytest.raises(DatasetError, match=r"high[/\\]a\.png"):
        check_pairs(pairs)


def test_check_pairs_min_size_and_sizes(tmp_path):
    make_pair_folder(tmp_path, ["a.png"], size=(6, 8))
    pairs = find_pairs(tmp_path)
    assert check_pairs(pairs, min_size=(6, 8)) == [(6, 8)]
    with pytest.raises(DatasetError, match=r"low[/\\]a\.png is 6x8 .*smaller than the required 7x7"):
        check_pairs(pairs, min_size=(7, 7))


def test_real_lol_eval15_pair(shared_dir):
    pairs = find_pairs(shared_dir / "data" / "LOL", "test")
    assert [p.name for p in pairs] == ["778"]
    assert check_pairs(pairs) == [(400, 600)]
