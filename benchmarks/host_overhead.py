"""Host time per call of the fused affine op: the Triton route against the eager reference's op chain.

On a GPU the coupling's affine map at LLFlow's shapes takes tens of microseconds of device time, so
what the host spends issuing it decides whether the fused kernel wins at all. This benchmark
measures that host time on any machine: the Triton kernels' launches are replaced by a stub that
returns at once (``triton_affine._affine_forward_kernel`` and ``_affine_backward_kernel``), so
each call costs exactly its Python, dispatch, allocation and autograd bookkeeping. The eager
reference (``backend="torch"``) runs for real on tensors so small (2x3x4x4, the channel slice
``x[:, 3:]`` the layers pass) that its arithmetic is negligible beside its per-op overhead.

Variants, interleaved in one run (1 thread):

* ``eager reference``: the PyTorch op chain (sigmoid, add, multiply, log, sum, ...), as on CPU;
* ``kernels (eager route)``: ``fused_affine(backend="triton")`` outside ``torch.compile``, which
  calls the kernels through a small ``autograd.Function``;
* ``kernels (custom op)``: ``torch.ops.flowkit.fused_affine``, the route ``torch.compile`` takes
  (and the eager route before it had its own).

and the same for the whole coupling step of :class:`~flowkit.layers.AffineCoupling` (split, map,
join: :func:`~flowkit.kernels.fused_affine_coupling`), whose eager kernel route allocates the
joined output and copies the passed-through half into it instead of calling ``torch.cat``.

Usage::

    python benchmarks/host_overhead.py            # about two minutes

Target (issue 11): the eager route at most 1.2x the eager reference's host time. Results go to
``benchmarks/results/host_overhead_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse

import torch
from _timing import device_tag, environment, interleaved, markdown_table, write_results

from flowkit.kernels import fused_affine, fused_affine_coupling


class _NoLaunch:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](...)`` returns without launching."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def stub_kernels() -> None:
    from flowkit.kernels import triton_affine

    triton_affine._affine_forward_kernel = _NoLaunch()
    triton_affine._affine_backward_kernel = _NoLaunch()
    # Without a GPU the launcher would refuse CPU tensors; the stub runs nothing, so let it through.
    triton_affine._check = lambda *tensors: None


def make_variants(backward: bool, step: str) -> dict[str, object]:
    x_full = torch.randn(2, 6, 4, 4).requires_grad_(backward)
    h = torch.randn(2, 6, 4, 4, requires_grad=backward)
    gy, gl = torch.ones(2, 3, 4, 4), torch.ones(2)
    op = torch.ops.flowkit.fused_affine

    def run(call):
        def fn():
            if step == "coupling":
                y, logdet = call(*x_full.split([3, 3], dim=1))
                grads = (torch.ones(2, 6, 4, 4), gl)
            else:
                y, logdet = call(None, x_full[:, 3:])   # a channel slice, as the couplings pass
                grads = (gy, gl)
            if backward:
                torch.autograd.backward((y, logdet), grads)
            return y
        return fn

    if step == "coupling":
        return {
            "eager reference": run(lambda x1, x2: fused_affine_coupling(x1, x2, h, backend="torch")),
            "kernels (eager route)": run(lambda x1, x2: fused_affine_coupling(x1, x2, h, backend="triton")),
        }
    return {
        "eager reference": run(lambda _, x: fused_affine(x, h, backend="torch")),
        "kernels (eager route)": run(lambda _, x: fused_affine(x, h, backend="triton")),
        "kernels (custom op)": run(lambda _, x: op(x, h, 1e-4, "cross", False, "triton")),
    }


COLUMNS = [
    ("step", "step", ""), ("mode", "mode", ""), ("variant", "variant", ""), ("median_us", "median us", ".1f"),
    ("iqr_us", "IQR us", ".1f"), ("best_us", "best us", ".1f"), ("ratio", "vs eager reference", ".2f"),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=31, help="samples per variant")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    stub_kernels()
    device = torch.device("cpu")
    rows = []
    for step in ("map", "coupling"):
        for mode, backward in (("fwd", False), ("fwd+bwd", True)):
            stats = interleaved(make_variants(backward, step), device, rounds=args.rounds, min_sample_s=0.05)
            base = stats["eager reference"]
            for name, s in stats.items():
                # time ratio variant/reference, the median of the per-round ratios
                ratio = 1.0 / s.speedup_over(base)
                rows.append({"step": step, "mode": mode, "variant": name, "median_us": s.median * 1e6,
                             "iqr_us": s.iqr * 1e6, "best_us": min(s.values) * 1e6, "ratio": ratio,
                             "samples": s.samples})
    env = environment(device)
    result = {"benchmark": "host_overhead", "environment": env, "settings": {"rounds": args.rounds},
              "rows": rows}
    markdown = "\n".join([
        f"# Host time per fused-affine call on {env['device']}",
        "",
        f"torch {env['torch']}, triton {env['triton']}, 1 thread, {env['date_utc']} UTC, commit "
        f"{env['commit']}; `python benchmarks/host_overhead.py`; {args.rounds} interleaved samples "
        "per variant. Kernel launches stubbed out (they return at once), so the kernel rows are pure "
        "host time; the eager reference runs its op chain on 2x3x4x4 tensors, where arithmetic is "
        "negligible. 'map' is fused_affine alone, 'coupling' the whole coupling step with its join "
        "(fused_affine_coupling). 'vs eager reference' is variant time / reference time of the same "
        "step (median of per-round ratios): at most 1.2 is the target for the eager route.",
        "",
        "CPU run: a CPU's dispatch is cheaper than CUDA's launch path, so the absolute numbers are a "
        "lower bound for a GPU host; the ratios compare the same Python and dispatcher work.",
        "",
    ]) + markdown_table(rows, COLUMNS)
    paths = write_results(f"host_overhead_{device_tag(device)}", result, markdown)
    print(markdown)
    print("\nwrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
