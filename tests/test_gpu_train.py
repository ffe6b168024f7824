"""benchmarks/gpu_train.py, the GPU stretch of a CPU campaign, checked on CPU with a tiny model: what
``stage`` carries fits the transfer limit and makes a valid config and init, and ``run`` trains from
it and brings back weights that load."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowkit.models import LLFlow
from flowkit.models.llflow.checkpoint import load_checkpoint, model_weights, save_checkpoint
from flowkit.models.llflow.cli import load_model
from flowkit.models.llflow.train import load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_train():
    spec = importlib.util.spec_from_file_location("gpu_train", ROOT / "benchmarks" / "gpu_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _photo(path: Path, rng: np.random.Generator, size: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def campaign(tmp_path):
    """A tiny online-synthetic run's checkpoint at step 40, and its data folder."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    for folder in ("photos/a", "photos/b"):
        for i in range(20):
            _photo(data / folder / f"{i:02d}.png", rng)
    for i in range(5):
        _photo(data / "val" / f"v{i}.png", rng)
    _photo(data / "pairs" / "low" / "p.png", rng)
    _photo(data / "pairs" / "high" / "p.png", rng)
    config = load_config("tiny")
    config.data = dataclasses.replace(
        config.data, synthetic_source=("photos/a", "photos/b"), synthetic_online=True, synthetic_val_source="val",
        synthetic_val_count=5, val_limit=5, real_train="pairs", real_train_repeat=2, batch_size=2, dequantize=True,
    )
    config.optim.ema = 0.99
    torch.manual_seed(0)
    model, ema = LLFlow(config.llflow_config()), LLFlow(config.llflow_config())
    for parameter in ema.parameters():  # EMA weights unlike the model's, so the test sees which are taken
        parameter.data.add_(0.05 * torch.randn_like(parameter))
    llflow_config = dataclasses.asdict(config.llflow_config())
    llflow_config["stack_blocks"] = list(llflow_config["stack_blocks"])
    plain = config.to_dict()
    plain["data"]["synthetic_source"] = list(plain["data"]["synthetic_source"])
    state = {"format": "flowkit.models.llflow.train/1", "step": 40, "model": model.state_dict(),
             "ema": ema.state_dict(), "llflow_config": llflow_config, "config": plain,
             "scheduler": {"_last_lr": [2.5e-4]}}
    return save_checkpoint(state, tmp_path / "last.pt"), data, ema


def test_stage_fits_the_transfer_and_writes_a_valid_fork(gpu_train, campaign, tmp_path, monkeypatch):
    checkpoint, data, ema = campaign
    monkeypatch.setattr(gpu_train, "tree_bytes", lambda root=None: 0)
    folder = tmp_path / "stage"
    everything = gpu_train.stage(checkpoint, data, folder, None, 3, 4, seed=1, limit=64 * 2**20)
    assert everything["photographs"] == everything["of"] == 40
    photo_bytes = sum(p.stat().st_size for p in (folder / "data" / "photos").rglob("*.png"))
    # A limit that leaves room for about 25 of the 40 photographs: the stage takes what fits.
    limit = gpu_train.MARGIN + everything["bytes"] - photo_bytes + 4096 + photo_bytes * 25 // 40
    report = gpu_train.stage(checkpoint, data, folder, None, 3, 4, seed=1, limit=limit)
    assert 16 <= report["photographs"] < 40
    staged = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert staged + gpu_train.MARGIN <= limit
    assert report["validation"] == 4 and len(list((folder / "data" / "val").iterdir())) == 4
    assert {p.name for p in (folder / "data" / "pairs").rglob("*.png")} == {"p.png"}

    config = load_config(folder / "stretch.toml")
    assert config.optim.lr == 2.5e-4 and config.optim.milestones == ()  # the campaign's current rate, held
    assert config.data.num_workers == 3 and config.data.val_limit == config.data.synthetic_val_count == 4
    assert config.data.synthetic_source == ("photos/a", "photos/b") and config.data.dequantize
    assert config.llflow_config() == load_config("tiny").llflow_config()

    weights, _ = model_weights(load_checkpoint(folder / "init.pt"), "init.pt")
    for name, value in ema.state_dict().items():  # the EMA weights, floating ones in float16
        expected = value.half() if value.is_floating_point() else value
        assert weights[name].dtype == expected.dtype and torch.equal(weights[name], expected), name

    with pytest.raises(ValueError, match="training photographs fit"):
        gpu_train.stage(checkpoint, data, folder, None, 3, 4, seed=1, limit=limit - photo_bytes * 20 // 40)


def test_run_trains_from_the_stage_and_brings_back_loadable_weights(gpu_train, campaign, tmp_path, monkeypatch):
    checkpoint, data, _ = campaign
    monkeypatch.setattr(gpu_train, "tree_bytes", lambda root=None: 0)
    folder, out = tmp_path / "stage", tmp_path / "out"
    gpu_train.stage(checkpoint, data, folder, 1e-3, 0, 2, seed=0)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert gpu_train.run(folder, 5.0, out, "cpu", iterations=3) == 0
    assert (out / "summary.txt").read_text().splitlines()[1] == "last checkpoint: step 3"
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,lr") and any(row.startswith("3,") for row in rows[1:])
    model = load_model(out / "last_ema.pt")
    initial = load_model(folder / "init.pt")
    assert model.config == initial.config
    moved = [name for name, value in model.state_dict().items()
             if value.is_floating_point() and not torch.equal(value, initial.state_dict()[name].float())]
    assert moved  # three steps of training changed the EMA weights
