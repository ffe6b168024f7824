"""LLFlow's flow backpropagated by inversion (``LLFlowConfig.memory = "invertible"``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from flowkit.models import LLFlow, LLFlowConfig
from flowkit.models.llflow.flow import ConditionalFlow

from .conftest import perturbed, relative_error, toy_config

TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}


def _loss_and_gradients(model: LLFlow, low, high, **terms) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model.loss(low, high, torch.Generator().manual_seed(0), **terms)
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("terms", [{}, {"decode_weight": 2.0, "decode_temperature": 0.5}], ids=["nll", "decode"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_training_loss_and_gradients_match_the_standard_path(dtype, terms):
    """Encoder and flow gradients through LLFlow.loss (the likelihood, and with the decode term
    whose inverse passes backpropagate as usual): the flow's conditioning gets its gradient too."""
    torch.manual_seed(0)
    model = perturbed(LLFlow(toy_config())).to(dtype).train()
    generator = torch.Generator().manual_seed(1)
    high = torch.rand(2, 3, 8, 16, generator=generator, dtype=dtype)
    low = high * 0.2
    loss, expected = _loss_and_gradients(model, low, high, **terms)
    model.flow.memory = "invertible"
    loss_inv, actual = _loss_and_gradients(model, low, high, **terms)
    assert torch.equal(loss, loss_inv)
    assert any(name.startswith("encoder.") for name in expected)
    for name, grad in expected.items():
        assert relative_error(actual[name], grad) <= TOLERANCE[dtype], name


def _saved_flow_bytes(flow: ConditionalFlow, high: torch.Tensor, conditions: list[torch.Tensor]) -> int:
    """Bytes of distinct tensors autograd keeps for the flow's backward, not counting its inputs."""
    known = {p.data_ptr() for p in flow.parameters()} | {t.data_ptr() for t in (high, *conditions)}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in known:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        outputs = flow(high, conditions)  # held, so that no saved storage is freed and reused meanwhile
    del outputs
    return sum(storages.values())


def test_saved_flow_activations_do_not_grow_with_steps_per_level():
    high = torch.rand(1, 3, 16, 16)
    saved = {}
    for steps in (1, 4):
        model = perturbed(LLFlow(toy_config(steps_per_level=steps))).train()
        conditions = [c.detach().requires_grad_(True) for c in model.condition(high * 0.2).conditions]
        for mode in ("standard", "invertible"):
            model.flow.memory = mode
            saved[steps, mode] = _saved_flow_bytes(model.flow, high, conditions)
    # The outputs of the three levels, each with as many elements as the image: 3 * 768 floats.
    assert saved[1, "invertible"] == saved[4, "invertible"] == 3 * high.numel() * 4
    assert saved[4, "standard"] > 2 * saved[1, "standard"] > 20 * saved[1, "invertible"]


def test_memory_mode_is_validated_and_older_configs_load_with_the_standard_mode():
    with pytest.raises(ValueError, match="memory must be one of"):
        LLFlowConfig(memory="checkpoint")
    flow = ConditionalFlow(cond_channels=2, steps_per_level=1, transition_steps=0, hidden_channels=4)
    assert flow.memory == "standard"
    with pytest.raises(ValueError, match="ConditionalFlow: memory must be one of"):
        flow.memory = "low"
    with pytest.raises(ValueError, match="ConditionalFlow: memory must be one of"):
        ConditionalFlow(cond_channels=2, steps_per_level=1, memory="low")
    fields = dataclasses.asdict(toy_config())
    del fields["memory"]  # a config saved before the field existed
    assert LLFlowConfig(**fields).memory == "standard"
    # The mode is not part of the weights: both modes have the same state dict.
    flow_inv = ConditionalFlow(cond_channels=2, steps_per_level=1, transition_steps=0, hidden_channels=4,
                               memory="invertible")
    assert list(flow_inv.state_dict()) == list(flow.state_dict())


def test_the_config_switch_reaches_the_flow():
    assert LLFlow(toy_config(memory="invertible")).flow.memory == "invertible"
    assert LLFlow(toy_config()).flow.memory == "standard"
