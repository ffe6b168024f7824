from __future__ import annotations

import os
import socket
import warnings

import ddp_worker
import pytest
import torch
import torch.multiprocessing as mp

from flowkit.models.llflow.train import load_config, train
from flowkit.models.llflow.train.trainer import _Objective, emulated_autocast, epoch_batches


def _final_state(output):
    return torch.load(output / "last.pt", weights_only=True)


def test_epoch_batches_cover_each_index_at_most_once_and_split_ranks():
    ranks = [epoch_batches(23, 3, seed=1, epoch=2, rank=r, world=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 23 // 6
    flat = [i for rank in ranks for batch in rank for i in batch]
    assert len(flat) == len(set(flat)) == 18
    assert epoch_batches(23, 3, 1, 2) != epoch_batches(23, 3, 1, 3)  # a new shuffle per epoch
    with pytest.raises(ValueError, match="fewer than one step"):
        epoch_batches(5, 3, 0, 0, world=2)


@pytest.mark.parametrize("dequantize", [False, True])
def test_resume_reproduces_the_uninterrupted_run_exactly(micro_config, tmp_path, dequantize):
    import dataclasses

    def config(name):
        loaded = load_config(micro_config(8, tmp_path / name))
        return dataclasses.replace(loaded, data=dataclasses.replace(loaded.data, dequantize=dequantize))

    straight = config("straight")
    train(straight, device="cpu", progress=False)

    interrupted = config("interrupted")
    first = train(interrupted, device="cpu", progress=False, stop_after=3)
    assert first.step == 3
    midway = _final_state(tmp_path / "interrupted")["model"]
    resumed = train(interrupted, device="cpu", progress=False, resume=tmp_path / "interrupted" / "last.pt")
    assert resumed.step == 8

    a, b = _final_state(tmp_path / "straight"), _final_state(tmp_path / "interrupted")
    assert a["step"] == b["step"] == 8
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), f"{name} differs after resume"
    for key, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], b["optimizer"]["state"][key]["exp_avg"])
    # The comparison means something: training moved the weights after the interruption.
    assert any(not torch.equal(t, midway[n]) for n, t in a["model"].items())


def test_a_non_finite_loss_skips_the_step(micro_config, tmp_path, monkeypatch):
    real_forward = _Objective.forward
    calls = {"n": 0}

    def poisoned(self, low, high, histeq):
        calls["n"] += 1
        loss = real_forward(self, low, high, histeq)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(_Objective, "forward", poisoned)
    result = train(load_config(micro_config(4, tmp_path / "nan")), device="cpu", progress=False)
    assert result.skipped_steps == [2]
    state = _final_state(tmp_path / "nan")
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ddp_ends_with_identical_parameters(micro_config, tmp_path):
    config_path = micro_config(4, tmp_path / "ddp")
    # The worker lives in a plain module on sys.path: spawned children must be able to import it.
    mp.spawn(ddp_worker.run, args=(2, _free_port(), str(config_path), str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name, tensor in rank0.items():
        assert torch.equal(tensor, rank1[name]), f"{name} differs between ranks"
    # ActNorm's data-dependent initialisation ran (synchronised) on both ranks.
    assert any(name.endswith("initialized") and bool(t) for name, t in rank0.items())


def test_tiny_config_learns_on_synthetic_pairs(tmp_path):
    """The shipped tiny config: the NLL falls and the output beats the dark input on held-out pairs."""
    config = load_config("tiny")
    config.run.output = str(tmp_path / "tiny")
    result = train(config, device="cpu", progress=False)
    losses = [loss for _, loss in result.losses]
    early, late = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    final = result.validations[-1]
    print(f"tiny run: loss {early:.3f} -> {late:.3f} bits/pixel; held-out PSNR {final['psnr']:.2f} dB "
          f"vs input {final['input_psnr']:.2f} dB; SSIM {final['ssim']:.3f}")
    assert late < early - 1.0
    assert final["psnr"] > final["input_psnr"] + 3.0
    assert (tmp_path / "tiny" / "log.csv").exists() and (tmp_path / "tiny" / "images").is_dir()


@pytest.mark.parametrize("amp, check", [("bf16", "_is_mkldnn_bf16_supported"), ("fp16", "_is_mkldnn_fp16_supported")])
def test_emulated_autocast_names_the_setting_only_where_the_cpu_lacks_it(monkeypatch, amp, check):
    monkeypatch.setattr(torch.ops.mkldnn, check, lambda: False)
    message = emulated_autocast(amp, "cpu")
    assert message.startswith(f"[run] amp = '{amp}'") and "amp = 'none'" in message
    assert emulated_autocast("none", "cpu") is None
    assert emulated_autocast(amp, torch.device("cuda")) is None  # GPUs are not judged
    monkeypatch.setattr(torch.ops.mkldnn, check, lambda: True)
    assert emulated_autocast(amp, "cpu") is None


def test_training_with_emulated_bf16_warns_once(micro_config, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    config = load_config(micro_config(1, tmp_path / "slow"))
    config.run.amp = "bf16"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train(config, device="cpu", progress=False).step == 1
    assert [str(w.message)[:20] for w in caught if w.category is RuntimeWarning] == ["[run] amp = 'bf16': "]


@pytest.mark.filterwarnings("ignore:.run. amp = 'bf16'")  # on CPUs without AVX512-BF16
def test_bf16_autocast_ema_and_gradient_clipping_run(micro_config, tmp_path):
    config = load_config(micro_config(3, tmp_path / "mixed"))
    config.run.amp, config.optim.ema, config.optim.grad_clip = "bf16", 0.9, 1.0
    result = train(config, device="cpu", progress=False)
    assert result.step == 3 and not result.skipped_steps
    state = _final_state(tmp_path / "mixed")
    assert set(state["ema"]) == set(state["model"])
    # The average lags the weights it tracks.
    assert any(not torch.equal(state["ema"][n], t) for n, t in state["model"].items() if t.is_floating_point())


def test_torchrun_launches_ddp_training_from_the_command_line(micro_config, tmp_path):
    import subprocess
    import sys

    config = micro_config(2, tmp_path / "torchrun")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
         str(_free_port()), "-m", "flowkit", "train", "--config", str(config), "--device", "cpu", "--no-progress"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert _final_state(tmp_path / "torchrun")["step"] == 2


ONLINE = """
[model]
preset = "tiny"
encoder_channels = 8
growth_channels = 4
hidden_channels = 8
steps_per_level = 1

[data]
base = "{base}"
synthetic_source = "photos"
synthetic_online = true
synthesizer = "lol"
synthetic_val_source = "val_photos"
synthetic_val_count = 2
real_train = "real"
real_train_repeat = 2
patch_size = 16
batch_size = 3

[optim]
lr = 1e-3
ema = {ema}

[run]
iterations = {iterations}
seed = 5
val_every = 1000
checkpoint_every = 1000
log_every = 1
output = "{output}"
"""


def test_online_synthetic_data_with_real_pairs_trains_and_resumes_exactly(tmp_path):
    from flowkit.models.llflow.data import write_scenes, write_synthetic_pairs
    from flowkit.models.llflow.train.trainer import build_datasets

    write_scenes(tmp_path / "data" / "photos", 4, 24, 24, seed=1)
    write_scenes(tmp_path / "data" / "val_photos", 2, 24, 24, seed=2)
    write_scenes(tmp_path / "real_src", 1, 24, 24, seed=3)
    write_synthetic_pairs(tmp_path / "real_src", tmp_path / "data" / "real", multiple_of=8)

    def config(name, iterations=6, ema=0.9):
        path = tmp_path / f"{name}.toml"
        path.write_text(ONLINE.format(base=(tmp_path / "data").as_posix(), iterations=iterations, ema=ema,
                                      output=(tmp_path / name).as_posix()))
        return load_config(path)

    train_set, val_set = build_datasets(config("probe"), tmp_path / "probe")
    assert len(train_set) == 4 + 2 and len(val_set) == 2  # 4 photos, the real pair twice
    names = [train_set[i]["name"] for i in range(len(train_set))]
    assert names[-2:] == ["scene_0000", "scene_0000"] and train_set[4]["low"].shape == (3, 16, 16)

    train(config("straight"), device="cpu", progress=False)
    train(config("cut"), device="cpu", progress=False, stop_after=2)
    train(config("cut"), device="cpu", progress=False, resume=tmp_path / "cut" / "last.pt")
    a, b = _final_state(tmp_path / "straight"), _final_state(tmp_path / "cut")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), f"{name} differs after resume"
    for name, tensor in a["ema"].items():
        assert torch.equal(tensor, b["ema"][name]), f"EMA {name} differs after resume"
    # The average starts from the ActNorm-initialised model, not from its zero placeholders: with
    # a decay this close to 1 the average is still the initialised model after one step.
    train(config("frozen", iterations=1, ema=1 - 1e-9), device="cpu", progress=False)
    frozen = _final_state(tmp_path / "frozen")
    logs = [k for k in frozen["ema"] if k.endswith("actnorm.logs")]
    assert logs and all(frozen["ema"][k].abs().sum() > 0 for k in logs)
    rows = (tmp_path / "straight" / "log.csv").read_text().splitlines()
    assert len([r for r in rows if r.endswith(",train")]) == 6


def test_online_training_darkens_the_photographs_of_every_listed_folder(tmp_path):
    from flowkit.models.llflow.data import write_scenes
    from flowkit.models.llflow.train.trainer import build_datasets

    write_scenes(tmp_path / "data" / "first", 3, 24, 24, seed=1)
    write_scenes(tmp_path / "data" / "second", 2, 24, 24, seed=4)
    write_scenes(tmp_path / "data" / "val_photos", 2, 24, 24, seed=2)
    text = ONLINE.format(base=(tmp_path / "data").as_posix(), iterations=1, ema=0.9,
                         output=(tmp_path / "run").as_posix())
    text = text.replace('synthetic_source = "photos"', 'synthetic_source = ["first", "second"]')
    text = text.replace('real_train = "real"\nreal_train_repeat = 2\n', "").replace('"lol"', '"lol_wide"')
    (tmp_path / "two.toml").write_text(text)
    train_set, val_set = build_datasets(load_config(tmp_path / "two.toml"), tmp_path / "run")
    assert len(train_set) == 5 and len(val_set) == 2
    # Scenes of both folders share names (scene_0000...): the item names keep them apart.
    names = [train_set[i]["name"] for i in range(len(train_set))]
    assert len(set(names)) == 5 and {n.split("_")[0] for n in names} == {"first", "second"}


def test_online_training_holds_out_the_photographs_that_validate(tmp_path):
    """Without synthetic_val_source, the first synthetic_val_count photographs validate: they must
    not also be darkened online for training."""
    from flowkit.models.llflow.data import write_scenes
    from flowkit.models.llflow.train.trainer import build_datasets

    write_scenes(tmp_path / "data" / "photos", 5, 24, 24, seed=1)
    text = ONLINE.format(base=(tmp_path / "data").as_posix(), iterations=1, ema=0.9,
                         output=(tmp_path / "out").as_posix())
    text = text.replace('synthetic_val_source = "val_photos"\n', "").replace('real_train = "real"\n', "")
    text = text.replace("real_train_repeat = 2\n", "")
    path = tmp_path / "held_out.toml"
    path.write_text(text)
    train_set, val_set = build_datasets(load_config(path), tmp_path / "out")
    train_names = {train_set[i]["name"] for i in range(len(train_set))}
    val_names = {val_set[i]["name"] for i in range(len(val_set))}
    assert len(val_set) == 2 and len(train_set) == 3
    assert not train_names & val_names, f"validation photographs also train: {train_names & val_names}"
    written = tmp_path / "out" / "synthetic" / "train"
    assert not written.exists() or not any(written.rglob("*.png")), "online training wrote unused pairs"


@pytest.mark.parametrize("batch_size, rank, world", [(0, 0, 1), (2, 2, 2), (2, -1, 2), (2, 0, 0)])
def test_epoch_batches_rejects_impossible_splits(batch_size, rank, world):
    with pytest.raises(ValueError, match="epoch_batches needs batch_size >= 1 and 0 <= rank < world"):
        epoch_batches(10, batch_size, seed=0, epoch=0, rank=rank, world=world)


def test_ema_refuses_a_different_model():
    from torch import nn

    from flowkit.models.llflow.train.ema import ExponentialMovingAverage

    ema = ExponentialMovingAverage(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), decay=0.9)
    with pytest.raises(ValueError, match="not the model it was made from"):
        ema.update(nn.Sequential(nn.Linear(2, 2)))


def test_validate_refuses_an_empty_validation_set():
    from flowkit.models import LLFlow, LLFlowConfig
    from flowkit.models.llflow.train.trainer import validate

    model = LLFlow(LLFlowConfig(encoder_channels=4, encoder_blocks=1, growth_channels=4, stack_blocks=(),
                                steps_per_level=1, hidden_channels=4))
    with pytest.raises(ValueError, match="at least one validation pair"):
        validate(model, [], torch.device("cpu"))


def test_validate_scores_the_decode_it_is_given():
    from flowkit.models import LLFlow, LLFlowConfig
    from flowkit.models.llflow.metrics import psnr
    from flowkit.models.llflow.pretrained import PRIOR_MEAN
    from flowkit.models.llflow.train.trainer import validate

    torch.manual_seed(3)
    model = LLFlow(LLFlowConfig(encoder_channels=4, encoder_blocks=1, growth_channels=4, stack_blocks=(),
                                steps_per_level=1, hidden_channels=4))
    for parameter in model.parameters():  # away from the identity initialisation, so the decodes differ
        parameter.data.add_(0.05 * torch.randn_like(parameter))
    pairs = [{"low": 0.1 * torch.rand(3, 16, 16), "high": torch.rand(3, 16, 16)} for _ in range(2)]
    model.eval()  # as validate enhances

    def expected(seed=None, **options):
        scores = []
        for p in pairs:
            generator = None if seed is None else torch.Generator().manual_seed(seed)
            scores.append(float(psnr(model.enhance(p["low"][None], generator=generator, **options), p["high"][None])[0]))
        return sum(scores) / len(scores)

    prior_mean = validate(model, pairs, torch.device("cpu"), decode=PRIOR_MEAN)
    assert prior_mean["psnr"] == pytest.approx(expected(temperature=0.0), abs=1e-6)
    pair = validate(model, pairs, torch.device("cpu"))  # the shipped models' decode, seeded afresh per image
    assert pair["psnr"] == pytest.approx(expected(temperature=1.0, average=2, seed=0), abs=1e-6)
    assert abs(pair["psnr"] - prior_mean["psnr"]) > 1e-5  # the two checks above tell the decodes apart


def test_the_best_validated_weights_are_kept_across_a_resume(micro_config, tmp_path):
    import dataclasses
    import json

    from flowkit.models.llflow.cli import load_model
    from flowkit.models.llflow.train.trainer import build_datasets, validate

    config = load_config(micro_config(8, tmp_path / "run"))
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, val_every=2))
    first = train(config, device="cpu", progress=False, stop_after=4)
    second = train(config, device="cpu", progress=False, resume=tmp_path / "run" / "last.pt")
    scores = {int(v["step"]): v["psnr"] for v in first.validations + second.validations}
    assert sorted(scores) == [2, 4, 6, 8]
    best_step = max(scores, key=scores.get)
    record = json.loads((tmp_path / "run" / "best.json").read_text())
    assert record == {"step": best_step, "psnr": scores[best_step]}
    # best.pt holds the weights that scored it, in the form flowkit enhance loads.
    _, val_set = build_datasets(config, tmp_path / "run")
    rescored = validate(load_model(tmp_path / "run" / "best.pt"), val_set, torch.device("cpu"))["psnr"]
    assert rescored == pytest.approx(record["psnr"], abs=1e-5)


def test_init_starts_a_new_run_from_a_checkpoints_ema_weights(micro_config, tmp_path, monkeypatch):
    import dataclasses

    import flowkit.models.llflow.train.trainer as trainer

    source = load_config(micro_config(4, tmp_path / "source"))
    train(dataclasses.replace(source, optim=dataclasses.replace(source.optim, ema=0.5)), device="cpu", progress=False)
    ema = _final_state(tmp_path / "source")["ema"]

    seen = {}
    real_forward = trainer._Objective.forward

    def first_weights(self, low, high, histeq):
        seen.setdefault("weights", {k: v.clone() for k, v in self.model.state_dict().items()})
        return real_forward(self, low, high, histeq)

    monkeypatch.setattr(trainer._Objective, "forward", first_weights)
    config = load_config(micro_config(2, tmp_path / "tuned"))
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, init=str(tmp_path / "source" / "last.pt")))
    result = train(config, device="cpu", progress=False)
    assert result.step == 2  # a fresh run: its own step count, not the source's 4
    assert set(seen["weights"]) == set(ema)
    for name, tensor in ema.items():
        assert torch.equal(seen["weights"][name], tensor), f"{name} is not the source's EMA weight"
    # The source's last raw weights differ from its EMA: the test tells the two apart.
    assert any(not torch.equal(t, ema[n]) for n, t in _final_state(tmp_path / "source")["model"].items())


def test_init_refuses_weights_of_another_model_config(micro_config, tmp_path):
    import dataclasses

    config = load_config(micro_config(2, tmp_path / "run"))
    with pytest.raises(ValueError, match=r"\[run\] init llflow-small-synthetic has another model config"):
        train(dataclasses.replace(config, run=dataclasses.replace(config.run, init="llflow-small-synthetic")),
              device="cpu", progress=False)
    with pytest.raises(FileNotFoundError, match="neither a checkpoint file nor a shipped model"):
        train(dataclasses.replace(config, run=dataclasses.replace(config.run, init=str(tmp_path / "nope.pt"))),
              device="cpu", progress=False)


def test_init_takes_the_scale_floor_and_prior_mix_from_the_new_config(micro_config, tmp_path):
    import dataclasses

    source = load_config(micro_config(2, tmp_path / "source"))
    train(source, device="cpu", progress=False)
    assert _final_state(tmp_path / "source")["llflow_config"]["affine_eps"] == 1e-4
    # The fine-tune changes what shapes no weight; the weights load and the run records its own values.
    tuned = dataclasses.replace(
        load_config(micro_config(2, tmp_path / "tuned")),
        model={**source.model, "affine_eps": 0.05, "train_gt_ratio": 0.5},
        run=dataclasses.replace(source.run, init=str(tmp_path / "source" / "last.pt"), output=str(tmp_path / "tuned")),
    )
    assert train(tuned, device="cpu", progress=False).step == 2
    saved = _final_state(tmp_path / "tuned")["llflow_config"]
    assert (saved["affine_eps"], saved["train_gt_ratio"]) == (0.05, 0.5)
    # A size still has to match: the weights would not fit.
    wider = dataclasses.replace(tuned, model={**tuned.model, "hidden_channels": 2 * tuned.llflow_config().hidden_channels})
    with pytest.raises(ValueError, match=r"another model config than \[model\] \(differs in \['hidden_channels'\]\)"):
        train(wider, device="cpu", progress=False)


def test_dequantize_spreads_the_targets_over_their_8_bit_levels(micro_config, tmp_path, monkeypatch):
    import dataclasses

    import flowkit.models.llflow.train.trainer as trainer

    real_forward = trainer._Objective.forward

    def targets(dequantize):
        seen = []

        def capture(self, low, high, histeq):
            seen.append(high.clone())
            return real_forward(self, low, high, histeq)

        monkeypatch.setattr(trainer._Objective, "forward", capture)
        config = load_config(micro_config(2, tmp_path / f"run_{dequantize}"))
        train(dataclasses.replace(config, data=dataclasses.replace(config.data, dequantize=dequantize)),
              device="cpu", progress=False)
        return torch.cat(seen)

    plain, spread = targets(False), targets(True)
    assert spread.min() >= 0 and spread.max() < 1
    # Level k of the same batches spreads over [k, k + 1) / 256, about uniformly (std 1/sqrt(12)).
    assert torch.equal((spread * 256).floor(), (plain * 255).round())
    assert 0.25 < (spread * 256 - (spread * 256).floor()).std() < 0.33


def test_the_loss_section_adds_the_decode_term_to_each_step(micro_config, tmp_path):
    import dataclasses

    from flowkit.models.llflow.train import LossSection

    def losses(name, loss):
        config = load_config(micro_config(3, tmp_path / name))
        return train(dataclasses.replace(config, loss=loss), device="cpu", progress=False).losses

    plain = losses("plain", LossSection())
    decoded = losses("decoded", LossSection(decode_weight=3.0, decode_temperature=0.5))
    # The same weights and batch at step 1: the likelihood is the same, the decode term is added.
    assert plain[0][0] == decoded[0][0] == 1
    assert decoded[0][1] > plain[0][1] + 0.1
