"""Print the parameter counts of LLFlow's presets next to the reference implementation's "used" counts.

The reference counts below were counted on the reference implementation built from its released
configurations: its parameters minus those of the modules it builds but never calls, for the
whole model and for the encoder.

flowkit does not carry the reference's never-used modules, so its counts equal the reference's
trained ("used") parameters; the paper's "model size" counts the encoder only.

    python examples/llflow_param_counts.py
"""

from __future__ import annotations

from flowkit.models import LLFlow, LLFlowConfig

REFERENCE_USED = {"lol": (37_677_395, 17_421_059), "lol_small": (4_967_635, 1_701_379),
                  "lol_v2": (37_677_395, 17_421_059)}


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> None:
    print(f"{'preset':<10} {'total':>12} {'encoder':>12} {'flow':>12}   reference used (total / encoder)")
    mismatches = []
    for preset, (total_ref, encoder_ref) in REFERENCE_USED.items():
        model = LLFlow(getattr(LLFlowConfig, preset)())
        total, encoder, flow = count(model), count(model.encoder), count(model.flow)
        ok = (total, encoder) == (total_ref, encoder_ref)
        print(f"{preset:<10} {total:>12,} {encoder:>12,} {flow:>12,}   {total_ref:,} / {encoder_ref:,}"
              f"  {'ok' if ok else 'MISMATCH'}")
        if not ok:
            mismatches.append(preset)
    if mismatches:
        raise SystemExit(f"parameter counts differ from the reference for {mismatches}")


if __name__ == "__main__":
    main()
