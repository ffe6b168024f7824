"""The shipped LLFlow: it loads offline without pickle, its sha256 matches, it enhances real LOL as its card says."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from flowkit.models import LLFlow, LLFlowConfig
from flowkit.models.llflow._weights import WeightsError, sha256_of
from flowkit.models.llflow.data import read_image
from flowkit.models.llflow.metrics import psnr
from flowkit.models.llflow.pretrained import (
    DEFAULT_PRETRAINED,
    PRETRAINED,
    export_pretrained,
    pretrained_names,
    read_exported,
    round_weights,
)

TOY = LLFlowConfig(encoder_channels=4, encoder_blocks=2, growth_channels=4, stack_blocks=(1,),
                   steps_per_level=1, hidden_channels=4)


@pytest.fixture(scope="module")
def shipped() -> LLFlow:
    return LLFlow.from_pretrained()


def test_the_default_model_is_installed_and_its_sha256_matches():
    entry = PRETRAINED[DEFAULT_PRETRAINED]
    assert pretrained_names()[0] == DEFAULT_PRETRAINED
    assert entry.path.is_file(), f"{entry.path} is not installed"
    assert sha256_of(entry.path.read_bytes()) == entry.sha256
    assert entry.path.stat().st_size <= 25 * 2**20


def test_from_pretrained_is_an_eval_model_with_its_card(shipped):
    assert not shipped.training
    card = shipped.pretrained_card
    assert card["name"] == DEFAULT_PRETRAINED and "synthetic" in card["data"]
    for key in ("recipe", "steps", "wall_time", "hardware", "lol778_psnr"):
        assert card[key], key
    assert LLFlow.from_pretrained(DEFAULT_PRETRAINED).config == shipped.config


def test_loading_runs_no_pickle(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a shipped model must load without unpickling")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert isinstance(LLFlow.from_pretrained(), LLFlow)


def test_the_shipped_model_enhances_real_lol_778_as_its_card_reports(shared_dir, shipped):
    lol = shared_dir / "data" / "LOL" / "eval15"
    low, high = read_image(lol / "low" / "778.png")[None], read_image(lol / "high" / "778.png")[None]
    enhanced = shipped.enhance(low)
    reported = float(shipped.pretrained_card["lol778_psnr"])
    uint8 = (enhanced * 255).round() / 255  # the card's number is of the saved 8-bit image
    assert psnr(uint8, high).item() >= reported - 0.05


def test_the_shipped_model_keeps_the_exposure_of_photographs_that_are_already_bright(shared_dir, shipped):
    # v3 lifted every input to one brightness: the three brightest DICM photographs (means
    # 0.70-0.76) came out at 0.89-0.91 with 54-60% of their pixels white. v4 learned from a mild
    # share of its training data that a bright input is a bright scene (the model card).
    for name in ("47", "66", "46"):  # DICM's brightest, means 0.763, 0.760 and 0.697
        low = read_image(shared_dir / "data" / "real_lowlight" / "DICM" / "test" / "low" / f"{name}.jpg")[None]
        saved = (shipped.enhance(low) * 255).round()
        white = (saved >= 254).all(dim=1).double().mean()
        assert abs(float(saved.mean() / 255 - low.mean())) < 0.06 and white < 0.35, (float(low.mean()), float(white))


def test_unknown_names_and_damaged_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no shipped LLFlow model is called 'nope'"):
        LLFlow.from_pretrained("nope")
    path = tmp_path / "m.safetensors"
    digest = export_pretrained(LLFlow(TOY), path, {"note": "x"})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="damaged or was replaced"):
        read_exported(path, digest, model_class=LLFlow)


def test_export_round_trip_keeps_every_tensor_and_the_config(tmp_path):
    torch.manual_seed(0)
    model = LLFlow(TOY)
    with torch.no_grad():
        model.loss(torch.rand(2, 3, 16, 16) * 0.2, torch.rand(2, 3, 16, 16))  # ActNorm initialisation
    digest = export_pretrained(model, tmp_path / "m.safetensors", {"data": "scenes"})
    again = read_exported(tmp_path / "m.safetensors", digest, model_class=LLFlow)
    assert again.config == TOY and again.pretrained_card == {"data": "scenes"}
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    low = torch.rand(1, 3, 16, 24) * 0.2
    assert torch.equal(model.eval().enhance(low), again.enhance(low))
    with pytest.raises(ValueError, match="card entries must be strings"):
        export_pretrained(model, tmp_path / "n.safetensors", {"steps": 3})


def test_a_float16_export_loads_as_the_rounded_model_at_half_the_size(tmp_path):
    torch.manual_seed(0)
    model = LLFlow(TOY)
    with torch.no_grad():
        model.loss(torch.rand(2, 3, 16, 16) * 0.2, torch.rand(2, 3, 16, 16))  # ActNorm initialisation
        for parameter in model.parameters():  # away from the zero-initialised couplings
            parameter.add_(0.05 * torch.randn_like(parameter))
    full = export_pretrained(model, tmp_path / "f32.safetensors")
    half = export_pretrained(model, tmp_path / "f16.safetensors", dtype=torch.float16)
    size = (tmp_path / "f16.safetensors").stat().st_size
    assert size < 0.55 * (tmp_path / "f32.safetensors").stat().st_size
    loaded = read_exported(tmp_path / "f16.safetensors", half, model_class=LLFlow)
    original = read_exported(tmp_path / "f32.safetensors", full, model_class=LLFlow)
    rounded = round_weights(model, torch.float16)
    changed = 0
    for name, tensor in rounded.state_dict().items():
        assert loaded.state_dict()[name].dtype == tensor.dtype, name  # cast back to the model's float32
        assert torch.equal(loaded.state_dict()[name], tensor), name
        changed += not torch.equal(original.state_dict()[name], tensor)
    assert changed > 0  # the rounding did round something
    low = torch.rand(1, 3, 16, 24) * 0.2
    assert torch.equal(rounded.eval().enhance(low), loaded.enhance(low))
    with pytest.raises(ValueError, match="dtype must be"):
        export_pretrained(model, tmp_path / "i.safetensors", dtype=torch.int8)


def test_a_file_whose_metadata_does_not_fit_is_a_clear_error(tmp_path):
    from flowkit.models.llflow._weights import save_safetensors

    state = LLFlow(TOY).state_dict()
    wrong = json.dumps({**{f: getattr(TOY, f) for f in ("encoder_channels", "encoder_blocks")},
                        "growth_channels": 8, "stack_blocks": [1], "steps_per_level": 1, "hidden_channels": 4})
    digest = save_safetensors(tmp_path / "m.safetensors", state, {"llflow_config": wrong})
    with pytest.raises(WeightsError, match="do not fit the config"):
        read_exported(tmp_path / "m.safetensors", digest, model_class=LLFlow)
    digest = save_safetensors(tmp_path / "n.safetensors", state, {})
    with pytest.raises(WeightsError, match="no valid llflow_config"):
        read_exported(tmp_path / "n.safetensors", digest, model_class=LLFlow)
