"""Test settings: a hypothesis profile sized for 2-core CI, and where the shared research data is."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

# Test helper modules (e.g. flow_strategies.py) live beside this file; importlib mode needs the path.
sys.path.insert(0, str(Path(__file__).parent))

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
