"""
3. A multi-scale image flow and its temperature
===============================================

A small Glow (:class:`flowkit.recipes.Glow`) on 16x16 grayscale images of discs, trained for a
minute on a CPU, then sampled at several temperatures. Glow is multi-scale: each level squeezes
the image (half the resolution, four times the channels), runs a few flow steps, and factors out
half of the channels under a learned prior conditioned on the rest
(:class:`~flowkit.layers.Split`), so later levels work on fewer, coarser variables.
"""

import matplotlib.pyplot as plt
import torch

from flowkit.recipes import Glow

torch.manual_seed(0)
SIZE = 16
STEPS = 200  # about 30 s on two CPU cores; a few thousand give crisper discs

# %%
# The data
# --------
# Each image is one bright disc of random position, radius and brightness on a dark background,
# with a soft edge. The model sees pixel values shifted to ``[-0.5, 0.5]`` with a little uniform
# noise (dequantisation of 8-bit values, so the density does not collapse onto 256 levels).


def discs(n: int) -> torch.Tensor:
    coords = torch.arange(SIZE).float()
    centre = 4 + 8 * torch.rand(n, 2, 1, 1)
    radius = 2 + 3 * torch.rand(n, 1, 1)
    brightness = 0.5 + 0.5 * torch.rand(n, 1, 1)
    distance = (
        (coords[None, :, None] - centre[:, 0]) ** 2
        + (coords[None, None, :] - centre[:, 1]) ** 2
    ).sqrt()
    image = brightness * torch.sigmoid(2 * (radius - distance))
    return image[:, None]  # (n, 1, SIZE, SIZE) in [0, 1]


def dequantize(images: torch.Tensor) -> torch.Tensor:
    return (torch.floor(images * 255) + torch.rand_like(images)) / 256 - 0.5


def show(images: torch.Tensor, ax, title: str) -> None:
    grid = (
        images[:16, 0]
        .reshape(4, 4, SIZE, SIZE)
        .permute(0, 2, 1, 3)
        .reshape(4 * SIZE, 4 * SIZE)
    )
    ax.imshow(grid.detach().clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=10)
    ax.axis("off")


fig, ax = plt.subplots(figsize=(3, 3))
show(discs(16), ax, "training images")
plt.show()

# %%
# The model
# ---------
# Two levels of four steps each (ActNorm, invertible 1x1 convolution, affine coupling). The
# first level's split-off half is standardised under its own learned prior and the second level
# runs on the other half (:class:`~flowkit.layers.FactorOut`); the latent holds both and has the
# image's shape, :attr:`~flowkit.recipes.Glow.latent_shape`.

model = Glow((1, SIZE, SIZE), levels=2, steps=4, hidden_channels=(32, 32))
parameters = sum(p.numel() for p in model.parameters())
print(f"{parameters:,} parameters; latent {model.latent_shape}")

# %%
# Training
# --------
# The loss is the negative log-likelihood in bits per dimension (the usual unit for images:
# :meth:`~flowkit.FlowModel.nll` divides by the number of pixels and by :math:`\log 2`).
# It is the continuous density's, on values spaced 1/256 apart; the 8-bit images' own bits per
# dimension add :math:`\log_2 256 = 8`, which is what is printed and plotted (an 8-bit image
# stored raw takes 8). The first batch initialises every ActNorm from the data.

optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
losses = []
for step in range(STEPS):
    loss = model.nll(dequantize(discs(64))).mean()  # continuous density
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 50.0)
    optimizer.step()
    losses.append(loss.item() + 8)
    if step % 50 == 0 or step == STEPS - 1:
        print(f"step {step:4d}: {losses[-1]:.3f} bits/dim")

fig, ax = plt.subplots(figsize=(5, 2.5))
ax.plot(losses)
ax.set(xlabel="step", ylabel="bits / dim", title="training loss")
fig.tight_layout()
plt.show()

# %%
# Samples at several temperatures
# -------------------------------
# Sampling draws the latent from the prior and inverts the flow. The temperature scales the
# prior's standard deviation, and so that of every split's learned prior: at 0 every level gives
# its prior mean (one image, the most likely latent, not the most likely image), and lower
# temperatures trade variety for cleaner samples, as in the Glow paper.

model.eval()
temperatures = (0.0, 0.5, 0.8, 1.0)
fig, axes = plt.subplots(1, len(temperatures), figsize=(12, 3.3))
with torch.no_grad():
    for ax, temperature in zip(axes, temperatures):
        generator = torch.Generator().manual_seed(1)
        samples = model.sample(16, temperature=temperature, generator=generator) + 0.5
        show(samples, ax, f"temperature {temperature}")
fig.tight_layout()
plt.show()
