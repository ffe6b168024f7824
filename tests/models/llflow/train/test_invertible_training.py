"""Training LLFlow with ``[model] memory = "invertible"``: it runs by inversion and resumes bit for bit."""

from __future__ import annotations

from pathlib import Path

import torch

from flowkit import memory
from flowkit.models import LLFlow
from flowkit.models.llflow.train import load_config, train


def _config(micro_config, tmp_path: Path, name: str, iterations: int, memory: str):
    """The suite's micro training config with ``[model] memory = ...`` added."""
    text = micro_config(iterations, tmp_path / name).read_text()
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace("[model]\n", f'[model]\nmemory = "{memory}"\n', 1))
    return load_config(path)


def _state(tmp_path: Path, name: str) -> dict:
    return torch.load(tmp_path / name / "last.pt", weights_only=True)


def test_invertible_training_resumes_bit_exactly(micro_config, tmp_path, monkeypatch):
    config = _config(micro_config, tmp_path, "straight", 4, "invertible")
    assert LLFlow(config.llflow_config()).flow.memory == "invertible"
    calls = {"n": 0}
    real_run = memory._run_invertible

    def counted_run(*args):
        calls["n"] += 1
        return real_run(*args)

    monkeypatch.setattr(memory, "_run_invertible", counted_run)
    train(config, device="cpu", progress=False)
    assert calls["n"] == 4 * 3  # every training step ran each of the 3 levels by inversion

    interrupted = _config(micro_config, tmp_path, "interrupted", 4, "invertible")
    assert train(interrupted, device="cpu", progress=False, stop_after=2).step == 2
    midway = _state(tmp_path, "interrupted")["model"]
    train(interrupted, device="cpu", progress=False, resume=tmp_path / "interrupted" / "last.pt")
    a, b = _state(tmp_path, "straight"), _state(tmp_path, "interrupted")
    assert a["step"] == b["step"] == 4 and a["llflow_config"]["memory"] == "invertible"
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), f"{name} differs after resume"
    # The comparison means something: training moved the weights after the interruption.
    assert any(not torch.equal(t, midway[n]) for n, t in a["model"].items())

