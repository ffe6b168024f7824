"""The LLFlow example scripts run end to end (in their quick mode)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_enhance_example_writes_a_png(tmp_path, capsys):
    output = tmp_path / "out" / "enhanced.png"
    # A missing input falls back to a generated image, so this needs nothing from ../shared.
    load("enhance_lol").main(["--input", str(tmp_path / "absent.png"), "--quick", "--output", str(output)])
    with Image.open(output) as image:
        pixels = np.asarray(image)
    assert pixels.shape == (96, 96, 3) and pixels.dtype == np.uint8
    assert "a generated image" in capsys.readouterr().out


def test_enhance_example_reads_an_image_file(tmp_path):
    source = tmp_path / "low.png"
    Image.fromarray((np.arange(20 * 30 * 3) % 40).astype(np.uint8).reshape(20, 30, 3)).save(source)
    output = tmp_path / "enhanced.png"
    load("enhance_lol").main(["--input", str(source), "--output", str(output), "--temperature", "0.5"])
    with Image.open(output) as image:
        assert image.size == (30, 20)


def test_parameter_count_script_agrees_with_the_reference(capsys):
    load("llflow_param_counts").main()
    out = capsys.readouterr().out
    assert "MISMATCH" not in out and out.count(" ok") == 3
