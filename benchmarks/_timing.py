"""Timing helpers shared by the benchmark scripts.

The machines these run on are shared and noisy, so variants are never timed one after the other:
:func:`interleaved` runs them round by round (in a new random order each round), takes many samples, and
reports medians with the interquartile range. :func:`copy_bandwidth` measures what a plain
device-to-device copy reaches in the same process, the yardstick for a memory-bound kernel.
Timing never goes into a test assertion; absolute times are quoted only from a GPU.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import os
import platform
import random
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = [
    "RESULTS",
    "Stats",
    "copy_bandwidth",
    "device_name",
    "device_tag",
    "environment",
    "interleaved",
    "markdown_table",
    "synchronize",
    "write_results",
]

RESULTS = Path(__file__).resolve().parent / "results"
"""Where the scripts write their JSON and Markdown results."""


@dataclass(frozen=True)
class Stats:
    """Seconds per call over the samples of one variant: median, quartiles, and the samples in order.

    Example:
        >>> Stats.of([3.0, 1.0, 2.0, 4.0, 5.0]).median
        3.0
    """

    median: float
    q1: float
    q3: float
    samples: int
    values: tuple[float, ...] = ()

    @property
    def iqr(self) -> float:
        """The interquartile range ``q3 - q1``, the spread that ignores outliers."""
        return self.q3 - self.q1

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        """Summarise raw samples."""
        if len(values) < 2:
            return cls(values[0], values[0], values[0], len(values), tuple(values))
        q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
        return cls(median, q1, q3, len(values), tuple(values))

    def speedup_over(self, baseline: Stats) -> float:
        """Median over rounds of ``baseline / self``, both timed in the same round.

        Pairing the samples of one round cancels the slow drifts of a shared machine's load, which
        a ratio of two medians does not.

        Example:
            >>> fast, slow = Stats.of([1.0, 2.0, 1.0]), Stats.of([2.0, 4.0, 2.0])
            >>> fast.speedup_over(slow)
            2.0
        """
        return statistics.median(b / s for b, s in zip(baseline.values, self.values))


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_calls(fn: Callable[[], object], calls: int, device: torch.device) -> float:
    """Seconds per call over ``calls`` back-to-back calls."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / calls
    synchronize(device)
    began = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return (time.perf_counter() - began) / calls


def interleaved(
    variants: dict[str, Callable[[], object]],
    device: torch.device,
    *,
    rounds: int,
    min_sample_s: float,
    warmup: int = 2,
) -> dict[str, Stats]:
    """Time every variant ``rounds`` times, interleaved round by round, and summarise each.

    Each variant is first warmed up (compilation, autotuning, caches) and calibrated: one sample
    is as many back-to-back calls as it takes to last ``min_sample_s``, so that launch overhead and
    timer resolution do not dominate short kernels. The variants run in a new random order each
    round (seeded, so runs are repeatable), and each sample starts after one untimed call of its
    variant.
    """
    calls = {}
    for name, fn in variants.items():
        for _ in range(warmup):
            fn()
        synchronize(device)
        single = _time_calls(fn, 1, device)
        calls[name] = max(1, min(1000, int(min_sample_s / max(single, 1e-9)) + 1))
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    shuffle = random.Random(0)
    gc.collect()
    gc.disable()  # a collection in the middle of a sample is noise, not the op's cost
    try:
        for _ in range(rounds):
            # A fresh random order each round: a rotation would keep every variant behind the same
            # neighbour, whose memory footprint then biases it by several percent on a CPU.
            order = names[:]
            shuffle.shuffle(order)
            for name in order:
                # One untimed call first: otherwise a variant's first call pays for refilling the
                # caches (and allocator) the previous variant used, a bias of several percent on CPU.
                variants[name]()
                samples[name].append(_time_calls(variants[name], calls[name], device))
    finally:
        gc.enable()
    return {name: Stats.of(values) for name, values in samples.items()}


def copy_bandwidth(device: torch.device, nbytes: int, *, rounds: int = 15) -> float:
    """Bytes per second (read plus write) of ``dst.copy_(src)`` for ``nbytes``-sized float32 buffers.

    Example:
        >>> import torch
        >>> copy_bandwidth(torch.device("cpu"), 1 << 20, rounds=3) > 0
        True
    """
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    stats = interleaved({"copy": lambda: dst.copy_(src)}, device, rounds=rounds, min_sample_s=0.005)
    return 2 * src.numel() * 4 / stats["copy"].median


def device_name(device: torch.device) -> str:
    """A human name for the device: the GPU's name, or the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_tag(device: torch.device) -> str:
    """A file-name-safe tag for results files: ``cpu`` or e.g. ``cuda-nvidia-h200``.

    Example:
        >>> import torch
        >>> device_tag(torch.device("cpu"))
        'cpu'
    """
    if device.type == "cpu":
        return "cpu"
    return "cuda-" + re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")


def _git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def environment(device: torch.device) -> dict[str, object]:
    """What a result depends on: device, versions, threads, date, commit."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton_version,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "commit": _git_commit(),
    }


def markdown_table(rows: Sequence[dict[str, object]], columns: Sequence[tuple[str, str, str]]) -> str:
    """A Markdown table of ``rows``; ``columns`` are ``(key, header, format spec)``.

    Missing values print as ``-``.

    Example:
        >>> print(markdown_table([{"a": 1.5, "b": "x"}], [("a", "A", ".2f"), ("b", "B", "")]))
        | A | B |
        |---:|---:|
        | 1.50 | x |
    """
    lines = ["| " + " | ".join(header for _, header, _ in columns) + " |",
             "|" + "|".join("---:" for _ in columns) + "|"]
    for row in rows:
        cells = []
        for key, _, spec in columns:
            value = row.get(key)
            cells.append("-" if value is None else format(value, spec))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(
    stem: str, payload: dict[str, object], markdown: str, directory: Path = RESULTS
) -> list[Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` under ``directory``; return their paths.

    Each file is written through a temporary file and renamed into place, so an interrupted run
    never leaves a half-written result beside the committed ones.
    """
    from flowkit.models.llflow.cli import _write_text

    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
    _write_text(json_path, json.dumps(payload, indent=2, default=_jsonable) + "\n")
    _write_text(md_path, markdown + "\n")
    return [json_path, md_path]


def _jsonable(value: object) -> object:
    if isinstance(value, Stats):
        return asdict(value)
    if isinstance(value, (torch.dtype, torch.device, Path)):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
