r"""
5. Spline and autoregressive flows
==================================

Three flows for vectors, built from sizes alone by :mod:`flowkit.recipes`: RealNVP (affine
couplings), MAF (masked autoregressive, affine) and NSF (rational-quadratic splines). We fit all
three to a density with sharp edges, compare their test log-likelihoods, and then look at what
separates them: how many network passes each direction costs, and how to assemble the same
pieces by hand (:class:`~flowkit.layers.Coupling` with any transform,
:class:`~flowkit.layers.MaskedAutoregressive`, :class:`~flowkit.layers.InverseAutoregressive`).
"""

import matplotlib.pyplot as plt
import torch

import flowkit
from flowkit.distributions import StandardNormal
from flowkit.layers import Coupling, InverseAutoregressive, MaskedAutoregressive, Permute
from flowkit.nn import MLP
from flowkit.recipes import MAF, NSF, RealNVP
from flowkit.transforms import RationalQuadraticSpline

torch.manual_seed(0)
# Training steps per model: about 15 s for all three on two CPU cores; 2000 for crisp edges.
STEPS = 300

# %%
# A density with edges
# --------------------
# A 4x4 checkerboard on :math:`[-2, 2]^2`, uniform on its dark squares: no smooth map of a
# Gaussian reaches it exactly, so it separates flows by how sharply they can bend.


def checkerboard(n: int) -> torch.Tensor:
    x = torch.rand(n) * 4 - 2
    column = torch.floor(x + 2)  # 0..3
    row = 2 * torch.randint(0, 2, (n,)) + (column % 2)  # a dark row of that column
    y = torch.rand(n) - 2 + row
    return torch.stack([x, y], 1)


data = checkerboard(2000)
fig, ax = plt.subplots(figsize=(3.4, 3.2))
ax.scatter(*data.T, s=2)
ax.set(title="training data", aspect="equal", xlim=(-2.5, 2.5), ylim=(-2.5, 2.5))
plt.show()

# %%
# Three recipes, the same sizes, the same batches
# -----------------------------------------------
# Each recipe is a :class:`~flowkit.FlowModel`: ``nll`` is the per-sample negative log-likelihood
# and training minimises its mean. The uniform density on the dark squares has entropy
# :math:`\log 8 \approx 2.079` nats, the best test NLL any model can reach.

models = {
    "RealNVP": RealNVP(features=2, transforms=6, hidden_features=(64, 64)),
    "MAF": MAF(features=2, transforms=6, hidden_features=(64, 64)),
    "NSF": NSF(features=2, transforms=3, hidden_features=(64, 64), bins=8, bound=3.0),
}
optimizers = {name: torch.optim.Adam(model.parameters(), lr=2e-3)
              for name, model in models.items()}
batches = [checkerboard(256) for _ in range(STEPS)]
for name, model in models.items():
    for x in batches:
        loss = model.nll(x, unit="nats").mean()
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()

test = checkerboard(20000)
with torch.no_grad():
    for name, model in models.items():
        model.eval()
        nll = model.nll(test, unit="nats").mean().item()
        print(f"{name:8s} test NLL {nll:.3f} nats "
              f"(best possible {torch.log(torch.tensor(8.0)).item():.3f})")

# %%
# The learned densities on a grid. The spline flow bends most sharply per layer; with more
# steps all three sharpen.

grid = torch.linspace(-2.5, 2.5, 160)
xx, yy = torch.meshgrid(grid, grid, indexing="xy")
points = torch.stack([xx.flatten(), yy.flatten()], 1)
fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.3), sharey=True)
with torch.no_grad():
    for ax, (name, model) in zip(axes, models.items()):
        density = model.log_prob(points).exp().reshape(xx.shape)
        ax.pcolormesh(xx, yy, density, cmap="viridis", shading="auto")
        ax.set(title=name, aspect="equal")
fig.tight_layout()
plt.show()

# %%
# What each direction costs
# -------------------------
# A coupling transforms half of the features from the other half, so both directions take one
# network pass. An autoregressive layer conditions feature :math:`d` on all features before it:
# :class:`~flowkit.layers.MaskedAutoregressive` (MAF) evaluates the density in one pass of its
# masked network (MADE), but sampling must fix one feature at a time, :math:`D` passes;
# :class:`~flowkit.layers.InverseAutoregressive` (IAF) is the same layer the other way round,
# fast to sample and :math:`D` passes to evaluate. Counting the MADE's calls in 8 dimensions:

features = 8
layers = {"MAF": MaskedAutoregressive(features), "IAF": InverseAutoregressive(features)}
for name, layer in layers.items():
    calls = []
    layer.made.register_forward_hook(lambda *args, calls=calls: calls.append(1))
    x = torch.randn(16, features)
    with torch.no_grad():
        y, _ = layer(x)                 # density direction (data to latent)
        density_passes = len(calls)
        layer.inverse(y)                # sampling direction
    sampling_passes = len(calls) - density_passes
    print(f"{name}: density {density_passes} MADE pass(es), sampling {sampling_passes}")

# %%
# So: MAF for density estimation (fit by maximum likelihood on data), IAF where samples are
# drawn much more often than densities are evaluated (a variational posterior, for instance), a
# coupling flow where both matter. flowkit's recipes take ``cond_features`` for conditional versions
# of all three, as in tutorial 1.
#
# Building your own
# -----------------
# The recipes are ordinary :class:`flowkit.Sequential` stacks of public layers. A coupling flow
# with a spline transform on vectors, the halves swapped between layers by a
# :class:`~flowkit.layers.Permute`, and its log-determinant checked against the brute-force
# Jacobian by :func:`~flowkit.testing.check_flow`, on a float64 copy as the test suite does. The
# perturbation is mild on purpose: random sub-network weights of scale 0.3 already give splines
# with near-flat bins (derivatives around 1e-5), so steep that their inverse loses most digits,
# in flowkit's spline and in nflows' alike.

import copy  # noqa: E402

from flowkit.testing import check_flow, perturb_parameters  # noqa: E402

layers = []
for _ in range(4):
    spline = RationalQuadraticSpline(bins=8, bound=3.0)
    layers += [Coupling(4, transform=spline, subnet=MLP), Permute(4, mode="swap")]
own = flowkit.FlowModel(flowkit.Sequential(*layers), StandardNormal((4,)))
perturb_parameters(own, 0.1)  # check away from the identity initialisation
in_float64 = copy.deepcopy(own.flow).double()
print(check_flow(in_float64, torch.randn(8, 4, dtype=torch.float64)))
samples = own.sample(3)
log_densities = own.log_prob(samples)
print("samples", tuple(samples.shape), "log-densities", tuple(log_densities.shape))
