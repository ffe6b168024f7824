from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowkit.models import LLFlow, LLFlowConfig
from flowkit.models.llflow.cli import load_model, main
from flowkit.models.llflow.data import read_image, write_image
from flowkit.models.llflow.exposure import adjust_exposure
from flowkit.models.llflow.histeq import histeq_image
from flowkit.models.llflow.pretrained import DEFAULT_PRETRAINED, MEAN_OF_PAIR
from flowkit.testing import perturb_parameters

TOY = LLFlowConfig(encoder_channels=8, encoder_blocks=2, growth_channels=4, stack_blocks=(1,),
                   steps_per_level=1, hidden_channels=8)


@pytest.fixture
def checkpoint(toy_checkpoint) -> Path:
    return toy_checkpoint


def _images(folder: Path, count: int, height: int = 20, width: int = 28) -> list[Path]:
    paths = []
    for i in range(count):
        paths.append(folder / f"img{i}.png")
        write_image(paths[-1], torch.rand(3, height, width, generator=torch.Generator().manual_seed(i)) * 0.3)
    return paths


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["enhance"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: flowkit" in capsys.readouterr().out


def test_enhance_help_states_the_default_models_own_temperature(capsys):
    # v4, the default, decodes at 0.8 (its registry entry); the help once said 1, the older models' value.
    with pytest.raises(SystemExit):
        main(["enhance", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "0.8 for llflow-synthetic-v4" in help_text


def test_python_dash_m_flowkit_runs():
    done = subprocess.run([sys.executable, "-m", "flowkit", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "enhance" in done.stdout


def test_enhance_writes_pngs_and_names_a_corrupt_file(tmp_path, checkpoint, capsys):
    inputs = tmp_path / "in"
    _images(inputs, 2)
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    status = main(["enhance", str(inputs), "-o", str(tmp_path / "out"), "--checkpoint", str(checkpoint)])
    assert status == 1
    assert "broken.png" in capsys.readouterr().err
    for name in ("img0.png", "img1.png"):
        out = read_image(tmp_path / "out" / name)
        assert out.shape == (3, 20, 28)


def test_enhance_never_overwrites_an_input(tmp_path, checkpoint, capsys):
    [source] = _images(tmp_path, 1)
    before = source.read_bytes()
    status = main(["enhance", str(source), "-o", str(tmp_path), "--checkpoint", str(checkpoint)])
    assert status == 1 and "overwrite" in capsys.readouterr().err
    assert source.read_bytes() == before


def test_enhance_samples_at_a_temperature(tmp_path, checkpoint):
    [source] = _images(tmp_path / "in", 1)
    argv = ["enhance", str(source), "-o", str(tmp_path / "out"), "--checkpoint", str(checkpoint),
            "--temperature", "0.8", "--samples", "2"]
    assert main(argv) == 0
    first, second = read_image(tmp_path / "out" / "img0_0.png"), read_image(tmp_path / "out" / "img0_1.png")
    assert not torch.equal(first, second)


@pytest.mark.parametrize("options", [[], ["--temperature", "1"]], ids=["default pair", "one sample"])
def test_an_images_enhancement_does_not_depend_on_the_other_inputs(tmp_path, checkpoint, options):
    sources = _images(tmp_path / "in", 3)
    assert main(["enhance", *map(str, sources), "-o", str(tmp_path / "all"), "--checkpoint", str(checkpoint),
                 *options]) == 0
    assert main(["enhance", str(sources[2]), "-o", str(tmp_path / "alone"), "--checkpoint", str(checkpoint),
                 *options]) == 0
    assert torch.equal(read_image(tmp_path / "all" / "img2.png"), read_image(tmp_path / "alone" / "img2.png"))
    # ... and it is what the Python API gives for that image, seeded as the shipped models seed.
    model = load_model(checkpoint)
    temperature = {"temperature": 1.0} if options else {}
    expected = model.enhance(read_image(sources[2])[None], generator=torch.Generator().manual_seed(0), **temperature)
    torch.testing.assert_close(read_image(tmp_path / "all" / "img2.png"), expected[0], atol=0.5 / 255 + 1e-6, rtol=0)


def test_enhance_averages_a_pair_at_temperature_1_by_default(tmp_path, checkpoint):
    assert load_model(checkpoint).enhance_defaults == MEAN_OF_PAIR
    [source] = _images(tmp_path / "in", 1)
    images = {}
    for name, options in {"default": [], "explicit": ["--temperature", "1", "--average", "2"],
                          "prior_mean": ["--temperature", "0"], "sample": ["--temperature", "1"]}.items():
        assert main(["enhance", str(source), "-o", str(tmp_path / name), "--checkpoint", str(checkpoint),
                     *options]) == 0
        images[name] = read_image(tmp_path / name / "img0.png")
    assert torch.equal(images["default"], images["explicit"])
    assert not torch.equal(images["default"], images["prior_mean"])
    assert not torch.equal(images["default"], images["sample"])  # a temperature alone: one sample


def test_enhance_names_the_image_whose_decode_diverged_in_one_line(tmp_path, checkpoint, capsys, monkeypatch):
    from flowkit.models.llflow.flow import ConditionalFlow

    inverse = ConditionalFlow.inverse

    def runaway(self, z, conditions):  # every decode runs away, the prior mean's too
        x, logdet = inverse(self, z, conditions)
        return x + 1e19, logdet

    monkeypatch.setattr(ConditionalFlow, "inverse", runaway)
    [source] = _images(tmp_path / "in", 1)
    argv = ["enhance", str(source), "-o", str(tmp_path / "out"), "--checkpoint", str(checkpoint),
            "--temperature", "1", "--average", "2"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "diverged" in line] == [
        f"flowkit enhance: {source}: LLFlow.enhance: the decode at temperature 1.0 diverged; decoded instead at "
        "the prior mean (temperature 0)"]
    assert "RuntimeWarning" not in err and "model.py" not in err  # no warning's source line
    assert (tmp_path / "out" / "img0.png").is_file()


def test_load_model_reads_an_exported_safetensors_file(tmp_path, capsys):
    from flowkit.models.llflow.pretrained import export_pretrained

    config = LLFlowConfig(encoder_channels=4, encoder_blocks=1, growth_channels=4, stack_blocks=(),
                          steps_per_level=1, hidden_channels=4)
    torch.manual_seed(0)
    model = LLFlow(config)
    path = tmp_path / "mine.safetensors"
    export_pretrained(model, path, {"data": "scenes"})
    loaded = load_model(path)
    assert loaded.config == config and loaded.enhance_defaults == MEAN_OF_PAIR and not loaded.training
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    [source] = _images(tmp_path / "in", 1)
    assert main(["enhance", str(source), "-o", str(tmp_path / "out"), "--checkpoint", str(path)]) == 0
    assert (tmp_path / "out" / "img0.png").is_file()
    assert main(["enhance", str(source), "-o", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "no.safetensors")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"no checkpoint at {tmp_path / 'no.safetensors'}")


def test_enhance_in_bfloat16_is_close_to_float32(tmp_path, checkpoint):
    [source] = _images(tmp_path / "in", 1)
    images = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / precision
        assert main(["enhance", str(source), "-o", str(out), "--checkpoint", str(checkpoint),
                     "--precision", precision]) == 0
        images[precision] = read_image(out / "img0.png")
    difference = (images["bfloat16"] - images["float32"]).abs()
    assert difference.max() < 0.1 and difference.mean() < 0.02


def test_enhance_exposure_brightens_darkens_and_rejects_a_non_number(tmp_path, checkpoint, capsys):
    [source] = _images(tmp_path / "in", 1)
    images = {}
    for stops in ("-1", None, "1.5"):
        out = tmp_path / f"out{stops}"
        extra = ["--exposure", stops] if stops else []
        assert main(["enhance", str(source), "-o", str(out), "--checkpoint", str(checkpoint), *extra]) == 0
        images[stops] = read_image(out / "img0.png").float()
    assert images["-1"].mean() < images[None].mean() < images["1.5"].mean()
    # 8-bit rounding aside, every pixel moves the same way.
    assert (images["1.5"] >= images[None] - 1 / 255).all() and (images["-1"] <= images[None] + 1 / 255).all()
    with pytest.raises(SystemExit) as stop:
        main(["enhance", str(source), "-o", str(tmp_path / "x"), "--exposure", "bright"])
    assert stop.value.code == 2
    assert "argument --exposure: expected a finite number of stops such as 0.5 or -1, got 'bright'" in capsys.readouterr().err


def test_tiles_cover_the_image_and_a_single_tile_equals_the_whole(checkpoint):
    model = load_model(checkpoint)
    low = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(0)) * 0.3
    histeq = histeq_image(low)
    tiled = model.enhance(low, histeq=histeq, tile=24, overlap=8)
    whole = model.enhance(low, histeq=histeq)
    assert tiled.shape == low.shape and torch.isfinite(tiled).all() and not torch.equal(tiled, whole)
    # Tiles are enhanced with their crop of the whole image's equalization: one tile is the whole.
    assert torch.allclose(model.enhance(low, tile=64, overlap=8), whole)
    assert torch.equal(model.enhance(low, tile=24, overlap=8, exposure=1.0),
                       adjust_exposure(model.enhance(low, tile=24, overlap=8), 1.0))
    with pytest.raises(ValueError, match=r"tile must be a multiple of 8 larger than twice the overlap \(4\), got 20"):
        model.enhance(low, tile=20, overlap=4)


def test_evaluate_writes_a_table(tmp_path, checkpoint):
    for side, scale in (("low", 0.2), ("high", 1.0)):
        for i in range(2):
            write_image(tmp_path / "data" / side / f"p{i}.png",
                        torch.rand(3, 16, 24, generator=torch.Generator().manual_seed(i)) * scale)
    argv = ["evaluate", "--data", str(tmp_path / "data"), "--checkpoint", str(checkpoint),
            "--output", str(tmp_path / "eval")]
    assert main(argv) == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert [row["name"] for row in report["images"]] == ["p0", "p1"]
    assert 0 < report["mean"]["psnr"] < 60 and -1 <= report["mean"]["paper_gtmean_ssim_gray"] <= 1
    # LPIPS is undefined below 32x32 pixels: null in the JSON, n/a in the table.
    assert report["mean"]["lpips"] is None and report["images"][0]["lpips"] is None
    table = (tmp_path / "eval" / "metrics.md").read_text()
    assert "| **mean** |" in table and "n/a" in table


def test_missing_checkpoint_is_a_clean_error(tmp_path, capsys):
    [source] = _images(tmp_path, 1)
    assert main(["enhance", str(source), "-o", str(tmp_path / "o"), "--checkpoint", "nope.pt"]) == 2
    assert "no checkpoint at nope.pt" in capsys.readouterr().err


def test_train_then_enhance_from_the_command_line(micro_config, tmp_path):
    config = micro_config(2, tmp_path / "run")
    assert main(["train", "--config", str(config), "--no-progress"]) == 0
    [source] = _images(tmp_path / "in", 1)
    assert main(["enhance", str(source), "-o", str(tmp_path / "out"), "--checkpoint",
                 str(tmp_path / "run" / "last.pt")]) == 0
    assert (tmp_path / "out" / "img0.png").exists()


def test_train_prints_a_slow_autocast_warning_as_one_line(micro_config, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    config = micro_config(1, tmp_path / "run")
    config.write_text(config.read_text().replace("[run]\n", "[run]\namp = \"bf16\"\n"))
    assert main(["train", "--config", str(config), "--no-progress"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "amp" in line]
    assert lines == [lines[0]] and lines[0].startswith("flowkit train: [run] amp = 'bf16': this CPU has no native")


def test_enhance_and_evaluate_on_the_real_lol_pair(shared_dir, tmp_path, checkpoint):
    lol = shared_dir / "data" / "LOL"
    assert main(["enhance", str(lol / "eval15" / "low" / "778.png"), "-o", str(tmp_path / "out"),
                 "--checkpoint", str(checkpoint)]) == 0
    assert read_image(tmp_path / "out" / "778.png").shape == (3, 400, 600)
    assert main(["evaluate", "--data", str(lol), "--checkpoint", str(checkpoint),
                 "--output", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert [row["name"] for row in report["images"]] == ["778"]
    assert 0 < report["images"][0]["lpips"] < 1.5


def test_evaluate_and_enhance_accept_a_reference_checkpoint(tmp_path):
    from flowkit.models.llflow.convert import to_official

    torch.manual_seed(0)
    model = LLFlow(TOY)
    perturb_parameters(model, 0.02, torch.Generator().manual_seed(2))
    official = tmp_path / "official.pth"
    torch.save({f"module.{k}": v for k, v in to_official(model).items()}, official)
    for i in range(2):
        write_image(tmp_path / "data" / "low" / f"q{i}.png", torch.rand(3, 16, 16) * 0.2)
        write_image(tmp_path / "data" / "high" / f"q{i}.png", torch.rand(3, 16, 16))
    assert main(["evaluate", "--data", str(tmp_path / "data"), "--checkpoint", str(official), "--official",
                 "--output", str(tmp_path / "eval")]) == 0
    assert main(["enhance", str(tmp_path / "data" / "low"), "-o", str(tmp_path / "out"),
                 "--checkpoint", str(official)]) == 0  # recognised as a reference checkpoint by its keys
    low = read_image(tmp_path / "data" / "low" / "q0.png")[None]
    expected = model.eval().enhance(low)[0]
    torch.testing.assert_close(read_image(tmp_path / "out" / "q0.png"), expected, atol=1 / 255 + 1e-6, rtol=0)


def test_enhance_and_evaluate_use_the_shipped_model_without_a_checkpoint(tmp_path, capsys):
    [source] = _images(tmp_path / "in", 1, 40, 48)
    assert main(["enhance", str(source), "-o", str(tmp_path / "out")]) == 0
    assert f"using the shipped model '{DEFAULT_PRETRAINED}'" in capsys.readouterr().err
    expected = LLFlow.from_pretrained().enhance(read_image(source)[None])[0]
    assert torch.allclose(read_image(tmp_path / "out" / "img0.png"), expected, atol=0.5 / 255 + 1e-6)
    for side, scale in (("low", 0.2), ("high", 1.0)):
        write_image(tmp_path / "data" / side / "p.png",
                    torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(0)) * scale)
    assert main(["evaluate", "--data", str(tmp_path / "data"), "--output", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["model"] == f"pretrained:{DEFAULT_PRETRAINED}"
    assert 0 < report["mean"]["lpips"] < 1.5 and report["mean"]["gtmean_lpips"] is not None
    assert main(["enhance", str(source), "-o", str(tmp_path / "o2"), "--pretrained", "nope"]) == 2
    assert "no shipped LLFlow model is called 'nope'" in capsys.readouterr().err
    assert main(["enhance", str(source), "-o", str(tmp_path / "o3"), "--official"]) == 2
    assert "--official needs --checkpoint" in capsys.readouterr().err
