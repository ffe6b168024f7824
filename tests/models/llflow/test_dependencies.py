"""A plain ``pip install flowkit`` (no extras) must give a working ``flowkit`` command."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from flowkit.models.llflow.data import write_image

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[3]


def _installed_closure(names: list[str]) -> set[str]:
    """The installed distributions that ``names`` pull in, their own requirements included."""
    seen, todo = set(), list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed: a plain install would not have it either (e.g. tomli on 3.11)
        seen.add(name)
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def _plain_site(folder: Path) -> Path:
    """A folder of links to the top-level modules of the declared dependencies and theirs only."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    folder.mkdir()
    for name in _installed_closure([Requirement(r).name for r in project["dependencies"]]):
        distribution = metadata.distribution(name)
        for top in {file.parts[0] for file in distribution.files or []}:
            if top.endswith((".dist-info", ".data", ".pth")) or top in ("..", "__pycache__", "bin"):
                continue
            if not (folder / top).exists():
                (folder / top).symlink_to(Path(distribution.locate_file(top)).resolve())
    return folder


@pytest.mark.parametrize("command", ["enhance", "evaluate", "train"])
def test_the_command_runs_with_only_the_declared_dependencies(tmp_path, toy_checkpoint, micro_config, command):
    for side, scale in (("low", 0.2), ("high", 1.0)):
        write_image(tmp_path / "data" / side / "a.png",
                    torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(0)) * scale)
    if command == "enhance":
        argv = ["enhance", tmp_path / "data" / "low" / "a.png", "-o", tmp_path / "out", "--checkpoint", toy_checkpoint]
        expected = tmp_path / "out" / "a.png"
    elif command == "evaluate":
        argv = ["evaluate", "--data", tmp_path / "data", "--checkpoint", toy_checkpoint, "--output", tmp_path / "out"]
        expected = tmp_path / "out" / "metrics.json"
    else:
        argv = ["train", "--config", micro_config(1, tmp_path / "run"), "--no-progress"]
        expected = tmp_path / "run" / "last.pt"
    site = _plain_site(tmp_path / "site")
    assert (site / "PIL").exists() and (site / "torch").exists()
    assert not any((site / extra).exists() for extra in ("triton", "matplotlib", "skimage", "pytest", "sphinx"))
    # -S: no site-packages; only the standard library, the declared dependencies and flowkit.
    script = f"import sys; sys.path[:0] = [{str(site)!r}, {str(ROOT)!r}]; from flowkit.models.llflow.cli import main; sys.exit(main())"
    done = subprocess.run([sys.executable, "-S", "-c", script, *map(str, argv)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected.is_file()
