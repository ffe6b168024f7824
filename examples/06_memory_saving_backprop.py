r"""
6. Training deep flows in constant memory
=========================================

Backpropagation keeps, for every layer, the tensors its backward pass will need, so a flow's
activation memory grows with its depth. A flow can do without them: each layer's input can be
rebuilt from its output with ``inverse``. :mod:`flowkit.memory` trains a chain that way. Here we
measure what standard backpropagation stores against depth, check that invertible
backpropagation gives the same gradients, and look at how exactly the inputs are rebuilt.
"""

import matplotlib.pyplot as plt
import torch

import flowkit
from flowkit.layers import ActNorm, AffineCoupling, InvConv1x1
from flowkit.memory import invertible, reconstruction_errors

torch.manual_seed(0)
DEPTHS = [2, 4, 8, 16]  # Glow steps (3 layers each)


def glow(steps: int, channels: int = 8) -> flowkit.Sequential:
    def step() -> list[flowkit.Flow]:
        coupling = AffineCoupling(channels, cond_channels=2)
        return [ActNorm(channels), InvConv1x1(channels), coupling]

    return flowkit.Sequential(*[layer for _ in range(steps) for layer in step()])


def trained(flow: flowkit.Sequential, x, c, steps: int = 15) -> flowkit.Sequential:
    """The flow after a few maximum-likelihood steps, away from its initialisation."""
    with torch.no_grad():
        flow(x, c)                       # ActNorm's data-dependent initialisation
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3)
    for _ in range(steps):
        y, logdet = flow(x, c)
        loss = (0.5 * y.square().flatten(1).sum(1) - logdet).mean() / y[0].numel()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return flow


# %%
# Measuring what backward keeps
# -----------------------------
# Autograd's saved-tensor hooks see every tensor stored for the backward pass. Summing their
# sizes during one forward pass gives the activation memory of a training step exactly, without
# depending on the allocator (on a GPU, ``torch.cuda.max_memory_allocated`` shows the same).


def saved_bytes(flow: flowkit.Flow, x: torch.Tensor, c: torch.Tensor) -> int:
    seen: dict[int, int] = {}  # by storage, so a tensor saved twice counts once

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y, logdet = flow(x, c)
    (y.square().sum() - logdet.sum()).backward()
    return sum(seen.values())


x, c = torch.randn(8, 8, 16, 16), torch.randn(8, 2, 16, 16)
standard, inverted = [], []
for steps in DEPTHS:
    flow = glow(steps)
    with torch.no_grad():
        flow(x, c)                       # ActNorm's data-dependent initialisation
    standard.append(saved_bytes(flow, x, c) / 2**20)
    inverted.append(saved_bytes(invertible(flow), x, c) / 2**20)
    print(f"{steps:2d} steps: standard {standard[-1]:6.1f} MiB saved, "
          f"invertible {inverted[-1]:5.1f} MiB")

fig, ax = plt.subplots(figsize=(4.8, 3.4))
ax.plot(DEPTHS, standard, "o-", label="standard backprop")
ax.plot(DEPTHS, inverted, "o-", label="invertible backprop")
ax.set(xlabel="Glow steps", ylabel="MiB saved for backward", xticks=DEPTHS,
       title="activation memory of one training step")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
plt.show()

# %%
# Invertible backpropagation saves only the chain's output, the parameters and the conditioning,
# whatever the depth. Not counted above: during its backward pass it rebuilds the members'
# activations one member at a time, so the true peak adds one member's worth. The price is
# compute: each member is inverted and run forward once more in the backward pass.
#
# The same gradients
# ------------------
# :func:`~flowkit.memory.invertible` wraps a :class:`~flowkit.Sequential` without copying it
# (the same parameters, the same state-dict keys), so switching is one line. The outputs are
# bit-identical and the gradients agree to rounding:

flow = trained(glow(8), x, c)
grads = {}
for name, chain in [("standard", flow), ("invertible", invertible(flow))]:
    flow.zero_grad()
    y, logdet = chain(x, c)
    (y.square().mean() - logdet.mean()).backward()
    grads[name] = torch.cat([p.grad.flatten() for p in flow.parameters()])
difference = (grads["invertible"] - grads["standard"]).abs().max()
relative = difference / grads["standard"].abs().max()
print(f"largest gradient difference, relative to the largest gradient: {relative:.1e}")

# %%
# How exactly the inputs are rebuilt
# -----------------------------------
# The gradients are exact up to how exactly each member inverts in floating point; rounding
# errors grow as they pass back through the members. :func:`~flowkit.memory.reconstruction_errors`
# measures it for any chain, here in float32 and float64, so you can check a layer of your own
# before training with it.

errors32 = reconstruction_errors(flow, x[:4], c[:4])
errors64 = reconstruction_errors(flow.double(), x[:4].double(), c[:4].double())
print(f"worst rebuilt input, relative: float32 {max(errors32):.1e}, "
      f"float64 {max(errors64):.1e}")
