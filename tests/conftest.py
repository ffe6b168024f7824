"""Test settings: a hypothesis profile sized for 2-core CI, and where the shared research data is."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

# Triton decides at import time whether its kernels run in its interpreter. Importing torch does
# not import triton, so on a machine without a GPU the switch is set here, before any test module
# can (tests/kernels/conftest.py explains the rest).
if not torch.cuda.is_available():
    assert "triton" not in sys.modules, "triton was imported before TRITON_INTERPRET could be set"
    os.environ.setdefault("TRITON_INTERPRET", "1")

settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("FLOWKIT_HYPOTHESIS_EXAMPLES", "50")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.load_profile("ci")
torch.set_num_threads(min(2, torch.get_num_threads()))

# ../shared beside the checkout holds research images and the LLFlow oracle; tests that need it
# skip with a message when it is absent, and nothing else depends on it.
SHARED = Path(os.environ.get("FLOWKIT_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"the shared research data is not at {SHARED} (set FLOWKIT_SHARED)")
    return SHARED


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
    """Writes a micro training config (tiny LLFlow, 16-pixel patches, generated scenes) for CI."""
    def make(iterations: int = 8, output: Path | None = None) -> Path:
        path = tmp_path / f"micro_{iterations}.toml"
        out = output or (tmp_path / "run")
        path.write_text(MICRO.format(iterations=iterations, output=out.as_posix()))
        return path

    return make


@pytest.fixture
def toy_checkpoint(tmp_path) -> Path:
    """A small LLFlow with perturbed (non-identity) weights, saved as ``flowkit enhance`` loads it."""
    from flowkit.models import LLFlow, LLFlowConfig
    from flowkit.models.llflow.train import save_model
    from flowkit.testing import perturb_parameters

    torch.manual_seed(0)
    model = LLFlow(LLFlowConfig(encoder_channels=8, encoder_blocks=2, growth_channels=4, stack_blocks=(1,),
                                steps_per_level=1, hidden_channels=8))
    perturb_parameters(model, 0.02, torch.Generator().manual_seed(1))
    return save_model(model, tmp_path / "model.pt")
