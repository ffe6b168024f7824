"""The README's quick start must run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_quick_start_runs_and_is_short(capsys):
    blocks = _python_blocks()
    assert blocks, "README.md has no python example"
    quick_start = blocks[0]
    assert len([line for line in quick_start.splitlines() if line.strip()]) <= 20
    exec(compile(quick_start, str(README), "exec"), {})
    assert "bits/dim" in capsys.readouterr().out


def test_readme_has_exactly_two_setup_commands():
    setup = README.read_text().split("## Set up", 1)[1]
    commands = re.search(r"```bash\n(.*?)```", setup, flags=re.S).group(1).strip().splitlines()
    assert commands == ['pip install -e ".[dev]"', "pytest"]
