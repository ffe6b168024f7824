"""examples/train_tiny.py runs end to end in its quick mode."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_train_tiny_quick_trains_evaluates_and_enhances(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("train_tiny", EXAMPLES / "train_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.run(tmp_path, quick=True)
    assert "held-out pairs after 20 steps" in capsys.readouterr().out
    report = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert len(report["images"]) == 2
    if (module.SHARED / "LOL").is_dir():
        assert (tmp_path / "enhanced" / "778.png").exists()
