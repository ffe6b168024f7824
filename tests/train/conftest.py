"""A micro training config on generated scenes, small enough for CI."""

from __future__ import annotations

from pathlib import Path

import pytest

MICRO = """
[model]
preset = "tiny"
encoder_channels = 8
growth_channels = 4
hidden_channels = 8
steps_per_level = 1

[data]
synthetic_source = "scenes"
synthetic_count = 8
synthetic_size = 32
synthetic_val_count = 2
patch_size = 16
batch_size = 4
cache = true

[optim]
lr = 1e-3
warmup = 2
milestones = [6]

[run]
iterations = {iterations}
seed = 3
val_every = 1000
checkpoint_every = 1000
log_every = 1
output = "{output}"
"""


@pytest.fixture
def micro_config(tmp_path: Path):
    def make(iterations: int = 8, output: Path | None = None) -> Path:
        path = tmp_path / f"micro_{iterations}.toml"
        out = output or (tmp_path / "run")
        path.write_text(MICRO.format(iterations=iterations, output=out.as_posix()))
        return path

    return make
