"""benchmarks/gpu_check.sh, the one-shot device check, as far as a machine without a GPU can check it:
its dry run lists every part, within one 8-minute device call, with commands that still match the
scripts and files they name."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("tests", "coupling_fp32", "coupling_bf16", "llflow_lol_small", "llflow_lol", "llflow_1080p", "llflow_4k",
         "ddp_nccl")


@pytest.fixture(scope="module")
def dry_run() -> str:
    if shutil.which("bash") is None:
        pytest.skip("no bash on this machine")
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def parts(output: str) -> dict[str, tuple[int, list[str]]]:
    found = re.findall(r"^\[(\w+), limit (\d+) s\] (.*)$", output, re.MULTILINE)
    return {name: (int(limit), shlex.split(command)) for name, limit, command in found}


def test_dry_run_lists_every_part_within_one_device_call(dry_run):
    listed = parts(dry_run)
    assert tuple(listed) == PARTS
    budget = int(re.search(r"budget (\d+) s", dry_run).group(1))
    assert sum(limit for limit, _ in listed.values()) <= budget <= 8 * 60 - 20  # room to start and pack
    assert "results: benchmarks/results/gpu_check_<gpu-name>" in dry_run
    # The GPU tests; enhancement and training (bf16 under autocast) at 400x600; the DDP run on CUDA.
    assert listed["tests"][1][-1] == "tests/kernels"
    assert "--cases" not in listed["llflow_lol_small"][1] and "--size" not in listed["llflow_lol_small"][1]
    ddp = listed["ddp_nccl"][1]
    assert ddp[:6] == ["python3", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    assert ddp[ddp.index("--device") + 1] == "cuda"


def test_dry_run_commands_match_the_scripts_and_files(dry_run):
    for name, (_, command) in parts(dry_run).items():
        scripts = [ROOT / arg for arg in command if arg.endswith(".py")]
        for script in scripts:
            assert script.is_file(), f"{name}: no {script}"
            source = script.read_text()
            for option in (arg for arg in command if arg.startswith("--")):
                assert f'"{option.replace("--no-", "--")}"' in source, f"{name}: {script.name} has no {option}"
        for arg in command:
            if arg.startswith(("benchmarks/", "tests/")) and "gpu_check_" not in arg:
                assert (ROOT / arg).exists(), f"{name}: no {arg}"
        # Every benchmark writes into the results folder, whose name carries the GPU's.
        if scripts and scripts[0].parent.name == "benchmarks":
            assert command[command.index("--out") + 1] == "benchmarks/results/gpu_check_<gpu-name>"


def test_ddp_config_is_a_valid_bf16_training_config():
    from flowkit.models.llflow.train import load_config

    config = load_config(ROOT / "benchmarks" / "gpu_check_ddp.toml")
    assert config.run.amp == "bf16"
    assert config.run.val_every == config.run.iterations  # one validation line in the log
