"""Continue a CPU training campaign of LLFlow on a GPU, inside one device call.

A device call carries at most 64 MiB of files there and brings back at most 8 files of 16 MiB, so
neither a training checkpoint (36 MiB with its optimiser state) nor all the training photographs
(86 MiB) travel. The stretch is therefore a fork of the campaign, not a resume:

* ``stage`` (here, beside the campaign) writes ``runs/gpu_train/`` (ignored by git, named in the
  device call's ``carry``): the campaign's EMA weights stored as float16 (``init.pt``), as many of
  its training photographs as fit the transfer beside the working tree (a seeded draw across its
  source folders), its real training pairs, the first validation photographs, and ``stretch.toml``,
  the campaign's config with the data paths, the learning rate (the campaign's current one,
  constant after a warm-up) and the DataLoader workers changed.
* ``run`` (on the device) trains from those weights with a fresh optimiser for ``--minutes``, then
  stops the trainer with SIGTERM (it writes a checkpoint and exits) and writes to ``--out``: the
  training log, the stdout, the EMA weights of the last checkpoint (``last_ema.pt``, float32) and
  of the best validation (``best.pt``, with ``best.json``). Both load with ``flowkit enhance
  --checkpoint`` and ``--init``; score them on CPU as the campaign's snapshots are scored.

::

    # here:
    python benchmarks/gpu_train.py stage --checkpoint ~/.cache/flowkit/runs/synthetic_v2_dq/last.pt \\
        --data-dir ../shared/data
    # on the device, one call with carry ["runs/gpu_train"]:
    python3 benchmarks/gpu_train.py run --minutes 7 --out "$OUT"

``run`` needs only python3 with a CUDA torch, Pillow, safetensors and einops there; flowkit is used
from this checkout through ``PYTHONPATH``.

With the 15 minutes of device time a session is lent: stage first (the budget counts the working
tree as it is then, so stage after the last commit that adds weights), then the device check in
one call (``bash benchmarks/gpu_check.sh; cp benchmarks/results/gpu_check_*.tar.gz "$OUT"/``, at
most 8 minutes), then at once, while the machine is warm, this stretch in a second call with
``--minutes`` set to the ``budget_left_s`` that ``status`` reports, less 90 s, over 60.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # flowkit from this checkout

import torch

from flowkit.models.llflow.checkpoint import load_checkpoint, model_weights, save_weights
from flowkit.models.llflow.data.pairs import image_files
from flowkit.models.llflow.train import load_config

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "runs" / "gpu_train"  # ignored by git; the device call carries it
TRANSFER_LIMIT = 64 * 2**20  # what one device call carries: working tree, shared/ and carried paths
MARGIN = 2**20  # left free, for files that change between staging and the call


def tree_bytes(root: Path = ROOT) -> int:
    """Bytes of the files a device call sends without ``carry``: tracked, and untracked but not ignored."""
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout.split(b"\0")
    return sum((root / name.decode()).stat().st_size for name in listed if name and (root / name.decode()).is_file())


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def to_toml(tables: dict[str, dict]) -> str:
    """``tables`` (section -> key -> value; ``None`` values left out) as TOML text."""
    lines = []
    for section, table in tables.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items() if value is not None]
        lines.append("")
    return "\n".join(lines)


def _copy(source: Path, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target.stat().st_size


def stage(checkpoint: Path, data_dir: Path, folder: Path, lr: float | None, workers: int, val_count: int,
          seed: int, limit: int = TRANSFER_LIMIT) -> dict:
    """Write ``folder`` (see the module docstring); returns what it holds, in counts and bytes."""
    state = load_checkpoint(checkpoint)
    weights, llflow_config = model_weights(state, str(checkpoint))
    if "config" not in state:
        raise ValueError(f"{checkpoint} is not a training checkpoint (it has no run config); give a run's last.pt")
    config = state["config"]
    data = config["data"]
    if not (data.get("synthetic_online") and data.get("synthetic_val_source")):
        raise ValueError(f"{checkpoint}: staging knows online synthetic runs with a synthetic_val_source, "
                         f"got synthetic_online={data.get('synthetic_online')}, "
                         f"synthetic_val_source={data.get('synthetic_val_source')}")
    if lr is None:  # the campaign's rate at its checkpoint (LambdaLR keeps it as _last_lr)
        lr = float(state.get("scheduler", {}).get("_last_lr", [config["optim"]["lr"]])[0])
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "data").mkdir(parents=True)

    weights = {name: value.half() if value.is_floating_point() else value for name, value in weights.items()}
    save_weights(weights, llflow_config, folder / "init.pt",
                 campaign={"checkpoint": str(checkpoint), "step": int(state["step"])})
    used = (folder / "init.pt").stat().st_size

    def relative(path: str) -> Path:
        if Path(path).is_absolute():
            raise ValueError(f"staging needs data paths relative to [data] base, got {path}")
        return data_dir / path

    real = 0
    if data.get("real_train"):
        for path in sorted(relative(data["real_train"]).rglob("*")):
            if path.is_file():
                real += _copy(path, folder / "data" / path.relative_to(data_dir))
    val = image_files(relative(data["synthetic_val_source"]))[:val_count]
    val_bytes = sum(_copy(path, folder / "data" / path.relative_to(data_dir)) for path in val)
    used += real + val_bytes

    sources = data["synthetic_source"]
    sources = [sources] if isinstance(sources, str) else list(sources)
    photographs = [path for source in sources for path in image_files(relative(source))]
    random.Random(seed).shuffle(photographs)
    budget = limit - MARGIN - tree_bytes() - used - 4096  # 4 KiB for stretch.toml
    taken = []
    for path in photographs:
        size = path.stat().st_size
        if size <= budget:
            budget -= _copy(path, folder / "data" / path.relative_to(data_dir))
            taken.append(path)
    if len(taken) < 16:
        raise ValueError(f"only {len(taken)} training photographs fit the {limit / 2**20:.0f} MiB transfer; "
                         "make the working tree smaller")

    data.update(base=None, synthetic_val_count=len(val), val_limit=len(val), num_workers=workers)
    config["optim"].update(lr=lr, milestones=[], warmup=min(config["optim"].get("warmup", 0), 200))
    config["run"].update(iterations=1_000_000, val_every=1000, checkpoint_every=250, init=None,
                         output="runs/gpu_train/run")
    (folder / "stretch.toml").write_text(
        f"# A GPU stretch forked from {checkpoint} at step {state['step']}: written by benchmarks/gpu_train.py\n"
        + to_toml(config)
    )
    load_config(folder / "stretch.toml")  # what the trainer will read must be a valid config
    return {"step": int(state["step"]), "lr": lr, "photographs": len(taken), "of": len(photographs),
            "validation": len(val), "real_bytes": real,
            "bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())}


def run(folder: Path, minutes: float, out: Path, device: str, iterations: int | None) -> int:
    """Train from ``folder`` for ``minutes`` (or ``iterations`` steps), then collect into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    output = Path(os.environ.get("TMPDIR", "/tmp")) / "flowkit_gpu_train"
    shutil.rmtree(output, ignore_errors=True)
    command = [sys.executable, "-m", "flowkit", "train", "--config", str(folder / "stretch.toml"),
               "--init", str(folder / "init.pt"), "--data-dir", str(folder / "data"), "--output", str(output),
               "--device", device, "--no-progress"]
    if iterations:
        command += ["--iterations", str(iterations)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1")
    start = time.monotonic()
    with open(out / "train.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            rc = process.wait(timeout=minutes * 60)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)  # the trainer stops after the step, with a checkpoint
            try:
                rc = process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                rc = process.wait()
    elapsed = time.monotonic() - start
    last = output / "last.pt"
    summary = [f"rc {rc}, {elapsed:.0f} s, device {device}"]
    if last.is_file():
        state = load_checkpoint(last)
        weights, llflow_config = model_weights(state, str(last))
        save_weights(weights, llflow_config, out / "last_ema.pt")
        summary.append(f"last checkpoint: step {state['step']}")
    for name in ("log.csv", "best.pt", "best.json"):
        if (output / name).is_file():
            shutil.copyfile(output / name, out / name)
    if device == "cuda" and torch.cuda.is_available():
        summary.append(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    (out / "summary.txt").write_text("\n".join(summary) + "\n")
    print("\n".join(summary))
    return 0 if rc in (0, 130) and last.is_file() else 1  # 130: stopped by the signal, after a checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    staging = commands.add_parser("stage", help="write runs/gpu_train from a campaign's checkpoint (here)")
    staging.add_argument("--checkpoint", type=Path, required=True, help="the campaign's last.pt")
    staging.add_argument("--data-dir", type=Path, required=True, help="the [data] base the campaign trains from")
    staging.add_argument("--folder", type=Path, default=STAGE)
    staging.add_argument("--lr", type=float, help="default: the campaign's current learning rate")
    staging.add_argument("--workers", type=int, default=8, help="DataLoader workers on the device (16 cores)")
    staging.add_argument("--val-count", type=int, default=4, help="validation photographs carried")
    staging.add_argument("--seed", type=int, default=0, help="seeds the draw of the photographs")
    running = commands.add_parser("run", help="train on the device and collect the results")
    running.add_argument("--folder", type=Path, default=STAGE)
    running.add_argument("--minutes", type=float, default=7.0)
    running.add_argument("--out", type=Path, required=True)
    running.add_argument("--device", default="cuda")
    running.add_argument("--iterations", type=int, help="stop after this many steps instead (a dry run on CPU)")
    args = parser.parse_args(argv)
    if args.command == "stage":
        report = stage(args.checkpoint, args.data_dir, args.folder, args.lr, args.workers, args.val_count, args.seed)
        print(f"{args.folder}: {report['bytes'] / 2**20:.1f} MiB, step {report['step']}, lr {report['lr']:g}, "
              f"{report['photographs']} of {report['of']} photographs, {report['validation']} validation")
        return 0
    return run(args.folder, args.minutes, args.out, args.device, args.iterations)


if __name__ == "__main__":
    raise SystemExit(main())
