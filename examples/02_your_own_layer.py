"""
2. Writing your own layer
=========================

A flowkit layer is a :class:`flowkit.Flow`: a ``torch.nn.Module`` with ``forward(x, cond)``
(data to latent) and ``inverse(y, cond)`` (latent to data), each returning the output and the
log-determinant of its Jacobian per sample. This tutorial writes one, a learnable element-wise
leaky ReLU, checks it with :func:`flowkit.testing.check_flow`, shows what the check says when
the log-determinant is wrong, and trains the layer inside a flow.
"""

import matplotlib.pyplot as plt
import torch
from torch import nn

import flowkit
from flowkit.distributions import StandardNormal
from flowkit.layers import ActNorm
from flowkit.testing import FlowCheckError, check_flow, perturb_parameters

_ = torch.manual_seed(0)

# %%
# The layer
# ---------
# :math:`y = x` for :math:`x \ge 0` and :math:`y = a x` below, with a learned slope
# :math:`a = e^{s} > 0` per feature, so the map is invertible. It is element-wise, so its
# Jacobian is diagonal and :math:`\log|\det \partial y / \partial x| = \sum_i \log a_i
# [x_i < 0]`. The inverse returns the negative log-determinant. ``conditional = False`` says the
# layer takes no ``cond``: a composite then never hands it one, and passing one is an error.


class LeakyReLUFlow(flowkit.Flow):
    conditional = False

    def __init__(self, features: int) -> None:
        super().__init__()
        self.log_slope = nn.Parameter(torch.zeros(features))  # starts as the identity

    def forward(self, x, cond=None):
        negative = x < 0
        slope = self.log_slope.exp()
        y = torch.where(negative, x * slope, x)
        logdet = (negative * self.log_slope).flatten(1).sum(1)
        return y, logdet

    def inverse(self, y, cond=None):
        negative = y < 0
        x = torch.where(negative, y * (-self.log_slope).exp(), y)
        logdet = -(negative * self.log_slope).flatten(1).sum(1)
        return x, logdet


# %%
# Checking it
# -----------
# :func:`~flowkit.testing.check_flow` runs the contract's checks on any layer: the round trip
# in both directions, the log-determinant against the brute-force float64 Jacobian, the inverse's
# log-determinant, and finite gradients for every parameter. A layer at its identity
# initialisation passes checks that it would fail elsewhere, so
# :func:`~flowkit.testing.perturb_parameters` moves the parameters first.

layer = LeakyReLUFlow(3)
perturb_parameters(layer, 0.5)
report = check_flow(layer, torch.randn(8, 3))
errors = (report.roundtrip_error, report.reverse_roundtrip_error)
print(f"round trip errors: {errors[0]:.1e}, {errors[1]:.1e}")
print(f"logdet error against the float64 Jacobian: {report.logdet_error:.1e}")
print(f"inverse logdet error: {report.inverse_logdet_error:.1e}")
print(f"parameters with a finite gradient: {report.parameters_checked}")

# %%
# A layer that forgets a term
# ---------------------------
# The most common bug in a hand-written flow is a wrong log-determinant: the samples look right,
# but the likelihood, and so training, is wrong. Here the slope's contribution is dropped in
# both directions, consistently: the round trips and the inverse's log-determinant still agree,
# and only the comparison with the brute-force Jacobian finds the error.


class ForgetfulLeakyReLU(LeakyReLUFlow):
    def forward(self, x, cond=None):
        y, _ = super().forward(x)
        return y, torch.zeros(len(x))

    def inverse(self, y, cond=None):
        x, _ = super().inverse(y)
        return x, torch.zeros(len(y))


broken = ForgetfulLeakyReLU(3)
perturb_parameters(broken, 0.5)
try:
    check_flow(broken, torch.randn(8, 3))
except FlowCheckError as error:
    print(f"FlowCheckError: {error}")

# %%
# Using it in a flow
# ------------------
# Layers compose with :class:`flowkit.Sequential`, which adds their log-determinants, and
# :class:`flowkit.FlowModel` puts a prior under a flow. Data with a heavier left tail than
# right, fitted by an :class:`~flowkit.layers.ActNorm` (shift and scale) followed by the new
# layer, learns a slope below one on the negative side:

data = torch.randn(2000, 1)
data = torch.where(data < 0, 3 * data, data)  # the left half is stretched three times

model = flowkit.FlowModel(
    flowkit.Sequential(ActNorm(1), LeakyReLUFlow(1)), StandardNormal((1,))
)
optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
for _ in range(300):
    loss = model.nll(data, unit="nats").mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
slope = model.flow[1].log_slope.exp().item()
print(f"negative log-likelihood {loss.item():.3f} nats")
print(f"learned slope below zero: {slope:.2f}")

with torch.no_grad():
    samples = model.sample(2000)
fig, ax = plt.subplots(figsize=(6, 3))
bins = torch.linspace(-10, 4, 60)
ax.hist(data[:, 0], bins=bins, alpha=0.5, density=True, label="data")
ax.hist(
    samples[:, 0],
    bins=bins,
    alpha=0.5,
    density=True,
    label="samples of the trained flow",
)
ax.legend()
ax.set(title="a skewed distribution fitted with ActNorm and LeakyReLUFlow")
fig.tight_layout()
plt.show()

# %%
# Layers with conditioning take ``cond`` in both methods and check its shape, and image layers
# return one log-determinant per sample over all pixels; see :doc:`../composing` and the
# contract on :class:`flowkit.Flow`.
