"""
4. LLFlow: enhance, evaluate, train, convert
=============================================

LLFlow (Wang et al., AAAI 2022) enhances a low-light photograph by sampling a conditional
normalizing flow: an encoder turns the dark image into conditioning features, and the flow maps
a latent drawn around a mean computed from the dark image to the enhanced image. flowkit ships a
small trained model, so this tutorial runs offline. Its input is a generated scene, darkened by
flowkit's low-light model, so that the ground truth is known and the metrics can be computed.
"""

import matplotlib.pyplot as plt
import torch

from flowkit.models import LLFlow
from flowkit.models.llflow.data import LowLightSynthesizer, darken, make_scene
from flowkit.models.llflow.metrics import psnr, reference_metrics, ssim

# %%
# A dark image with its ground truth
# ----------------------------------
# :func:`~flowkit.models.llflow.data.make_scene` draws a random scene of shapes (8-bit RGB);
# :meth:`LowLightSynthesizer.lol() <flowkit.models.llflow.data.LowLightSynthesizer.lol>` draws darkening
# parameters (exposure, gamma, colour cast, sensor noise) from the ranges fitted to real LOL
# pairs, and :func:`~flowkit.models.llflow.data.darken` applies them. A photo of your own loads with
# :func:`flowkit.models.llflow.data.read_image` instead.

generator = torch.Generator().manual_seed(3)
bright = make_scene(128, 192, seed=3).float() / 255
params = LowLightSynthesizer.lol().sample_params(generator)
dark = darken(bright, params, generator=generator).float() / 255
print(f"mean brightness: dark {dark.mean():.3f}, ground truth {bright.mean():.3f}")

# %%
# Enhancing it with the shipped model
# -----------------------------------
# :meth:`LLFlow.from_pretrained() <flowkit.models.LLFlow.from_pretrained>` loads the weights that
# ship inside the package (checked by sha256, no pickle) in eval mode.
# :meth:`~flowkit.models.LLFlow.enhance` takes ``(B, 3, H, W)`` images in ``[0, 1]`` of any
# size. By default the shipped model averages an antithetic pair of decodes at temperature 1,
# an estimate of the conditional mean, the output with the least expected squared error.
# ``temperature=0`` decodes the prior mean once, as the reference does; a positive temperature
# alone draws one sample, slightly different each time.

model = LLFlow.from_pretrained()
with torch.no_grad():
    enhanced = model.enhance(dark[None])[0]
    prior_mean = model.enhance(dark[None], temperature=0.0)[0]
    sampled = model.enhance(
        dark[None], temperature=0.8, generator=torch.Generator().manual_seed(0)
    )[0]

images = {
    "dark input": dark,
    "enhanced (default)": enhanced,
    "prior mean (temperature 0)": prior_mean,
    "sample (temperature 0.8)": sampled,
    "ground truth": bright,
}
fig, axes = plt.subplots(1, 5, figsize=(16, 2.8))
for ax, (title, image) in zip(axes, images.items()):
    ax.imshow(image.detach().permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_title(title, fontsize=10)
    ax.axis("off")
fig.tight_layout()
plt.show()

# %%
# Evaluation protocols: why papers' numbers differ
# ------------------------------------------------
# The same enhancement gets different PSNR and SSIM depending on how they are computed.
# :mod:`flowkit.models.llflow.metrics` has the standard definitions (float images, SSIM with an 11-tap Gaussian
# window per RGB channel, as scikit-image computes it) and LLFlow's reference protocol, which
# produced the published numbers: the prediction is truncated (not rounded) to 8 bits, SSIM is
# computed on grayscale images with a 7x7 uniform window, and with the scikit-image version the
# reference pinned, on each image column separately. Many papers also report numbers after
# *GT-mean* alignment, which rescales the prediction's brightness to the ground truth's: it
# uses the answer, so it measures everything but the overall exposure.

standard = {
    "psnr": psnr(enhanced, bright).item(),
    "ssim (rgb, gaussian)": ssim(enhanced, bright).item(),
}
reference = {
    key: value.item() for key, value in reference_metrics(enhanced, bright).items()
}
aligned = {
    key: value.item()
    for key, value in reference_metrics(enhanced, bright, gt_mean=True).items()
}
print(f"{'metric':<32}{'value':>8}")
for name, value in standard.items():
    print(f"{'standard ' + name:<32}{value:>8.3f}")
for name in reference:
    print(
        f"{'reference ' + name:<32}{reference[name]:>8.3f}"
        f"   with GT-mean {aligned[name]:.3f}"
    )

# %%
# Compare numbers only when they were computed the same way; ``flowkit evaluate`` reports all of
# these side by side. The model card (:doc:`../model_card`) has the shipped model's numbers on
# real LOL images.
#
# Training, evaluating and converting from the command line
# ---------------------------------------------------------
# The ``flowkit`` command trains from a TOML config, evaluates a model on a folder of pairs, and
# enhances files (each has ``--help``). ``tiny`` trains in minutes on a CPU on generated scenes;
# ``lol`` is the reference's schedule on the LOL dataset, which you download yourself:
#
# .. code-block:: bash
#
#    flowkit train --config tiny --output runs/tiny
#    flowkit train --config lol --data-root data/LOL
#    flowkit evaluate --data data/LOL --checkpoint runs/lol/last.pt
#    flowkit enhance photos/ -o enhanced/ --checkpoint runs/lol/last.pt
#
# A checkpoint of the reference implementation converts on load; its configuration is inferred
# from the tensor shapes (:meth:`~flowkit.models.LLFlow.from_official`):
#
# .. code-block:: python
#
#    model = LLFlow.from_official("LOL_smallNet.pth")
#
# From Python, a model you train is an ordinary module: ``model.nll(low, high)`` is the training
# loss (:meth:`~flowkit.models.LLFlow.nll`), and :doc:`../llflow` describes the configuration.
