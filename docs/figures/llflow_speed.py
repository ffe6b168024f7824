"""Chart LLFlow's enhancement speed and peak memory against the reference, for the performance page.

Run from the repository root after ``benchmarks/llflow.py ... --reference-dir ...`` (a few
seconds)::

    python docs/figures/llflow_speed.py [--results benchmarks/results/llflow_cpu_lol_small.json]
                                        [--out docs/_static/figures]

It reads the result file (never numbers typed in) and writes ``llflow_speed.png``: for each
variant and thread count, the speed-up over the reference implementation at equal weights and the
peak memory relative to the reference's, with the issue's targets (1.5x faster, 0.7x memory)
drawn as lines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from _output import save_png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/llflow_cpu_lol_small.json"))
    parser.add_argument("--out", type=Path, default=Path("docs/_static/figures"))
    args = parser.parse_args()
    result = json.loads(args.results.read_text())
    rows = [r for r in result["rows"] if r["workload"] == "enhance" and r["variant"] != "reference"]
    if not rows or rows[0].get("speedup_vs_reference") is None:
        raise SystemExit(f"{args.results}: no enhance rows measured against the reference (--reference-dir)")
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    threads = sorted({r["threads"] for r in rows})
    by_key = {(r["variant"], r["threads"]): r for r in rows}

    panels = [("speedup_vs_reference", "speed-up over the reference (higher is better)", 1.5),
              ("memory_vs_reference", "peak memory / reference's (lower is better)", 0.7)]
    panels = [p for p in panels if any(by_key[(v, t)].get(p[0]) is not None for v in variants for t in threads)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    axes = [axes] if len(panels) == 1 else list(axes)
    width = 0.8 / len(threads)
    for ax, (key, title, target) in zip(axes, panels):
        for i, t in enumerate(threads):
            values = [by_key[(v, t)].get(key) or 0.0 for v in variants]
            positions = [j + (i - (len(threads) - 1) / 2) * width for j in range(len(variants))]
            bars = ax.bar(positions, values, width, label=f"{t} thread{'s' if t > 1 else ''}", color=f"C{i}")
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(target, color="C3", lw=1, ls="--", label=f"target {target}x")
        ax.set_xticks(range(len(variants)), variants, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    settings, environment = result["settings"], result["environment"]
    fig.suptitle(f"LLFlow enhance, preset {settings['preset']}, {settings['size'][0]}x{settings['size'][1]}, "
                 f"{environment.get('cpu', environment.get('device', ''))}, commit {environment.get('commit', '?')}",
                 fontsize=9)
    fig.tight_layout()
    save_png(fig, args.out / "llflow_speed.png", dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main()
