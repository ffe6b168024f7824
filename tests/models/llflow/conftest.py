"""Shared fixtures for the LLFlow tests: the reference oracle (loaded once) and toy configurations."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from flowkit.models import LLFlow, LLFlowConfig
from flowkit.nn import ActivationNorm


@functools.lru_cache(maxsize=1)
def _load_oracle(path: str) -> dict:
    # The oracle holds only tensors, strings, numbers, lists and dicts: the safe loader suffices.
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture
def oracle(shared_dir: Path) -> dict:
    """``../shared/llflow/oracle_smallnet.pt``, read from disk once per test session."""
    path = shared_dir / "llflow" / "oracle_smallnet.pt"
    if not path.is_file():
        pytest.skip(f"the LLFlow oracle is not at {path}")
    return _load_oracle(str(path))


def toy_config(**changes) -> LLFlowConfig:
    """A tiny LLFlow configuration: every size small, but every kind of module present."""
    sizes = dict(encoder_channels=8, encoder_blocks=2, growth_channels=4, stack_blocks=(1,),
                 steps_per_level=2, transition_steps=1, hidden_channels=8)
    sizes.update(changes)
    return LLFlowConfig(**sizes)


@torch.no_grad()
def perturbed(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Mark every ActNorm initialised and move every parameter away from its identity-like init."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, ActivationNorm):
            module.initialized.fill_(True)
    for param in model.parameters():
        param.add_(scale * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return model


@pytest.fixture
def toy_model() -> LLFlow:
    torch.manual_seed(0)
    return perturbed(LLFlow(toy_config())).eval()


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max |actual - expected| / max |expected|`` (a max-norm relative error), in float64."""
    actual, expected = actual.detach().to(torch.float64), expected.detach().to(torch.float64)
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = float(expected.abs().max())
    return float((actual - expected).abs().max()) / (scale if scale > 0 else 1.0)
