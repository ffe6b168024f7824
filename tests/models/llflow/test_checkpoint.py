from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from flowkit.models.llflow.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    model_weights,
    restore_rng_state,
    save_checkpoint,
    save_model,
    save_weights,
)


def test_round_trip_with_weights_only_loading(tmp_path):
    state = {"step": 7, "weights": torch.randn(3, 3), "rng": capture_rng_state(), "config": {"lr": [1e-3]}}
    loaded = load_checkpoint(save_checkpoint(state, tmp_path / "c.pt"))
    assert loaded["step"] == 7 and torch.equal(loaded["weights"], state["weights"])


def test_saved_weights_load_as_the_model_they_came_from(tmp_path):
    import dataclasses

    from flowkit.models import LLFlow, LLFlowConfig
    from flowkit.models.llflow.cli import load_model

    config = LLFlowConfig(encoder_channels=8, encoder_blocks=2, growth_channels=4, stack_blocks=(1,),
                          steps_per_level=1, hidden_channels=8)
    torch.manual_seed(0)
    model = LLFlow(config)
    config_dict = dataclasses.asdict(config) | {"stack_blocks": [1]}
    path = save_weights(model.state_dict(), config_dict, tmp_path / "w.pt", campaign={"step": 12})
    assert load_checkpoint(path)["campaign"] == {"step": 12}
    loaded = load_model(path)
    assert loaded.config == config
    assert all(torch.equal(loaded.state_dict()[name], value) for name, value in model.state_dict().items())
    # save_model writes the same entries from the model itself
    weights, saved_config = model_weights(load_checkpoint(save_model(model, tmp_path / "m.pt")), "m.pt")
    assert saved_config == config_dict and weights.keys() == model.state_dict().keys()
    with pytest.raises(ValueError, match="may not replace"):
        save_weights(model.state_dict(), config_dict, tmp_path / "x.pt", format="other")
    assert not (tmp_path / "x.pt").exists()


def test_rng_state_restores_python_numpy_and_torch(tmp_path):
    import random

    import numpy as np

    state = load_checkpoint(save_checkpoint({"rng": capture_rng_state()}, tmp_path / "r.pt"))["rng"]
    first = (random.random(), float(np.random.rand()), float(torch.rand(())))
    restore_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == first


def test_missing_and_corrupt_checkpoints_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_checkpoint(tmp_path / "nothere.pt")
    good = save_checkpoint({"w": torch.randn(1000)}, tmp_path / "good.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(good.read_bytes()[:500])
    with pytest.raises(ValueError, match="broken.pt"):
        load_checkpoint(broken)


# The child writes version 1, then starts writing version 2 and stalls half-way through
# (as a process killed mid-write would), printing a line so the parent knows when to kill it.
_CHILD = textwrap.dedent(
    """
    import sys, time, torch
    from flowkit.models.llflow import _files, checkpoint
    path = sys.argv[1]
    checkpoint.save_checkpoint({"version": 1, "w": torch.zeros(10)}, path)
    def stalling_write(target, data):
        def half(out):
            out.write(bytes(data)[: len(data) // 2]); out.flush()
            print("half-written", flush=True); time.sleep(60)
        return _files.write_atomically(target, half)
    checkpoint.write_atomically = stalling_write
    checkpoint.save_checkpoint({"version": 2, "w": torch.ones(100000)}, path)
    """
)


def test_a_kill_mid_write_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "last.pt"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 120
        line = child.stdout.readline()
        assert line.strip() == "half-written", f"child did not reach the write: {line!r}"
        assert time.monotonic() < deadline
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    state = load_checkpoint(path)
    assert state["version"] == 1 and torch.equal(state["w"], torch.zeros(10))
    leftovers = [p.name for p in Path(tmp_path).iterdir() if p.name != "last.pt"]
    assert all(name.startswith(".last.pt.") and name.endswith(".tmp") for name in leftovers)
