"""Shipped weight files: safetensors only, sha256-checked, written atomically, never unpickled."""

from __future__ import annotations

import pickle

import pytest
import torch

from flowkit.models.llflow._weights import WeightsError, load_checked, save_safetensors, sha256_of


def test_round_trip_keeps_tensors_dtypes_and_metadata(tmp_path):
    tensors = {"a": torch.randn(3, 4), "flag": torch.tensor(True), "half": torch.ones(2, dtype=torch.float16)}
    digest = save_safetensors(tmp_path / "w.safetensors", tensors, {"k": "v"})
    assert digest == sha256_of((tmp_path / "w.safetensors").read_bytes())
    loaded, metadata = load_checked(tmp_path / "w.safetensors", digest)
    assert metadata == {"k": "v"}
    for key, value in tensors.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value)


def test_shared_storage_is_saved_as_separate_tensors(tmp_path):
    base = torch.arange(6.0)
    digest = save_safetensors(tmp_path / "w.safetensors", {"all": base, "view": base[2:4]})
    loaded, _ = load_checked(tmp_path / "w.safetensors", digest)
    assert loaded["view"].tolist() == [2.0, 3.0]


def test_a_changed_byte_is_refused_before_parsing(tmp_path):
    path = tmp_path / "w.safetensors"
    digest = save_safetensors(path, {"a": torch.zeros(4)})
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256 is .*damaged or was replaced"):
        load_checked(path, digest)


def test_missing_and_foreign_files_are_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="cannot read the weight file"):
        load_checked(tmp_path / "absent.safetensors", "0" * 64)
    # A pickle with the right hash still never runs: it is not parsed as a pickle at all.
    marker = tmp_path / "ran"
    payload = pickle.dumps(_Exploit(str(marker)))
    path = tmp_path / "evil.safetensors"
    path.write_bytes(payload)
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_checked(path, sha256_of(payload))
    assert not marker.exists()


def test_an_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    digest = save_safetensors(path, {"a": torch.zeros(2)})

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("flowkit.models.llflow._files.os.replace", broken_replace)
    with pytest.raises(OSError, match="No space") as error:
        save_safetensors(path, {"a": torch.ones(2)})
    assert error.value.filename == str(path)
    assert load_checked(path, digest)[0]["a"].tolist() == [0.0, 0.0]
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary left behind


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))
