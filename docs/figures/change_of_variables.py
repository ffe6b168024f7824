"""Draw the change of variables for the concepts page: a 1-D flow, its prior and its density.

Run from the repository root (a few seconds)::

    python docs/figures/change_of_variables.py [--out docs/_static/figures]

It writes ``change_of_variables.png``: the map ``z = f(x)`` (data to latent, flowkit's
``forward`` direction), the standard normal prior ``p_Z(z)``, and the data density
``p_X(x) = p_Z(f(x)) |f'(x)|`` against a histogram of samples ``f^{-1}(z)``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from _output import save_png


def f(x: torch.Tensor) -> torch.Tensor:
    """An increasing map from data to latent, steep (so the data density is high) near -1.2 and 0.8."""
    return 0.5 * x + 0.9 * torch.tanh(3 * (x - 0.8)) + 0.7 * torch.tanh(3 * (x + 1.2))


def f_inverse(z: torch.Tensor, lo: float = -10.0, hi: float = 10.0) -> torch.Tensor:
    low, high = torch.full_like(z, lo), torch.full_like(z, hi)
    for _ in range(60):  # bisection: f is increasing
        mid = (low + high) / 2
        below = f(mid) < z
        low, high = torch.where(below, mid, low), torch.where(below, high, mid)
    return (low + high) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/_static/figures"))
    out = parser.parse_args().out
    x = torch.linspace(-3.5, 3.5, 801, dtype=torch.float64, requires_grad=True)
    z = f(x)
    (slope,) = torch.autograd.grad(z.sum(), x)
    x, z = x.detach(), z.detach()
    prior = torch.distributions.Normal(0.0, 1.0)
    density = prior.log_prob(z).exp() * slope  # p_X(x) = p_Z(f(x)) |f'(x)|
    samples = f_inverse(torch.randn(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64))

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    axes[0].plot(x, z, color="k")
    axes[0].set(xlabel="data x", ylabel="latent z = f(x)", title="the flow f (forward: data to latent)")
    zz = torch.linspace(-3.5, 3.5, 400)
    axes[1].plot(zz, prior.log_prob(zz).exp(), color="C0")
    axes[1].fill_between(zz, prior.log_prob(zz).exp(), alpha=0.2, color="C0")
    axes[1].set(xlabel="latent z", title="prior $p_Z(z)$, standard normal")
    axes[2].hist(samples, bins=120, range=(-3.5, 3.5), density=True, color="C1", alpha=0.35,
                 label="samples $f^{-1}(z)$, $z \\sim p_Z$")
    axes[2].plot(x, density, color="C1", label="$p_Z(f(x))\\,|f'(x)|$")
    axes[2].set(xlabel="data x", title="data density $p_X(x)$")
    axes[2].legend(fontsize=8, loc="upper left")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, out / "change_of_variables.png", dpi=110)


if __name__ == "__main__":
    main()
