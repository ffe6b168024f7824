"""Benchmark the shipped LLFlow: enhancing one LOL-sized photo (600x400) on the CPU.

Variants, interleaved in one process on the same image (a real LOL low-light image when
``../shared`` is there, otherwise a dark random one of the same size):

* ``shipped``: ``LLFlow.from_pretrained().enhance(low)``, histogram equalization included (what
  ``flowkit enhance`` runs per image): one encoder pass and an antithetic pair of inverse flows;
* ``shipped, prior mean``: the same with ``temperature=0``, the reference's single decode;
* ``lol_small``: the reference's ``LOL_smallNet`` size (random weights) doing the same, the
  architecture the shipped model slims (encoder 32 -> 24 channels, growth 32 -> 16, coupling
  hidden 64 -> 32);
* ``lol``: the reference's full ``LOL-pc`` size, with ``--large`` only (about 20 s a call on a CPU).

The model card's target is an enhancement in at most 3 s on 2 CPU threads. On a shared machine
absolute CPU times are indicative only: the script reports medians and quartiles over interleaved
rounds and the ratio to ``lol_small`` measured within each round.

Usage::

    python benchmarks/pretrained.py                 # 2 threads, 7 rounds
    python benchmarks/pretrained.py --threads 1 --rounds 5 --large

Results go to ``benchmarks/results/pretrained_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from _timing import device_tag, environment, interleaved, markdown_table, write_results

from flowkit.models import LLFlow, LLFlowConfig

SHARED_LOW = Path(__file__).resolve().parents[2] / "shared" / "data" / "LOL" / "eval15" / "low" / "778.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--large", action="store_true", help="also time the full LOL-pc size")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")

    if SHARED_LOW.exists():
        from flowkit.models.llflow.data import read_image

        low, source = read_image(SHARED_LOW)[None], "LOL eval15 #778 (600x400)"
    else:
        low, source = torch.rand(1, 3, 400, 600, generator=torch.Generator().manual_seed(0)) * 0.1, "random"
    shipped = LLFlow.from_pretrained()
    models = {"shipped": shipped, "shipped, prior mean": shipped, "lol_small": LLFlow(LLFlowConfig.lol_small()).eval()}
    if args.large:
        models["lol"] = LLFlow(LLFlowConfig.lol()).eval()
    for model in models.values():  # the random-weight sizes enhance as the shipped model does
        model.enhance_defaults = dict(shipped.enhance_defaults)
    options = {name: {"temperature": 0.0} if name == "shipped, prior mean" else {} for name in models}
    variants = {name: (lambda m=model, o=options[name]: m.enhance(low, **o)) for name, model in models.items()}
    stats = interleaved(variants, device, rounds=args.rounds, min_sample_s=0.0, warmup=1)

    rows = []
    for name, result in stats.items():
        # Within-round ratios cancel the slow load drifts of a shared machine.
        per_round = sorted(b / a for a, b in zip(result.values, stats["lol_small"].values))
        rows.append({"variant": name, "median": result.median, "q1": result.q1, "q3": result.q3,
                     "speed": per_round[len(per_round) // 2],
                     "params": sum(p.numel() for p in models[name].parameters()) / 1e6})
    table = markdown_table(rows, [("variant", "variant", "s"), ("median", "median s", ".3f"),
                                  ("q1", "q1 s", ".3f"), ("q3", "q3 s", ".3f"),
                                  ("speed", "speed vs lol_small", ".2f"), ("params", "parameters (M)", ".2f")])
    env = environment(device)
    header = (f"Enhance one {tuple(low.shape[2:])} image ({source}), {args.threads} threads, "
              f"{args.rounds} interleaved rounds; {env['device']}, torch {env['torch']}, {env['date_utc']} UTC.")
    markdown = f"{header}\n\n{table}"
    print(markdown)
    write_results(f"pretrained_{device_tag(device)}", {"environment": env, "source": source,
                                                        "threads": args.threads, "stats": stats,
                                                        "rows": rows}, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
