"""Run the reference LLFlow implementation (github ``wyf0912/LLFlow``) at a flowkit model's weights.

For timing flowkit's ``LLFlow.enhance`` beside the reference's own enhancement at equal weights.
The reference is licensed CC BY-NC-SA 4.0, so none of its code is in this repository: it is
imported at run time from the user's own checkout, passed on the command line
(``--reference-dir``, the checkout's root or its ``code/`` folder). This harness builds the
reference's ``LLFlow_arch.LLFlow`` from an options dict derived from ``model.config``, loads
``to_official(model)`` into it and calls its test-time reverse pass. It was checked against
commit ``115da161a96de868d67494a32db848e31f85bbc1``, the commit the LLFlow specification
describes. At the specification's reference weights it reproduces that commit's enhancement
outputs (``oracle_smallnet.pt``) to within 2.4e-6.

Stubs: the reference's modules import ``cv2``, ``natsort``, ``yaml`` and ``torchvision`` at module
level (``utils/util.py``; an unused ``save_image`` in ``ConditionEncoder.py``), but building and
running the network uses none of them. A package that is not installed is replaced by an empty
stand-in module only while the reference is being imported. Calling anything on a stand-in
raises an error. So the benchmark needs neither OpenCV nor torchvision. Installed packages are
used as they are.

Self-check (compares with ``LLFlow.enhance`` and prints the largest difference)::

    python benchmarks/_reference_llflow.py --reference-dir ~/src/LLFlow
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flowkit.models import LLFlow, LLFlowConfig
from flowkit.models.llflow.convert import DEAD_PREFIXES, to_official

__all__ = ["load_reference", "reference_options"]

# Imported by the reference's modules at import time but never used by its network.
_OPTIONAL_IMPORTS = {"cv2": (), "natsort": (), "yaml": (), "torchvision": ("utils",)}

# LLFlowConfig fields the options dict below expresses. ``memory`` changes neither the parameters
# nor the results, so the reference needs no counterpart for it.
_EXPRESSED = {"encoder_channels", "encoder_blocks", "growth_channels", "stack_blocks", "steps_per_level",
              "transition_steps", "hidden_channels", "affine_eps", "train_gt_ratio", "memory"}


class _Options(dict):
    """The reference reads absent options as ``None`` (its option parser returns such dicts)."""

    def __missing__(self, key: str) -> None:
        return None


def _options(value: object) -> object:
    return _Options({k: _options(v) for k, v in value.items()}) if isinstance(value, dict) else value


def reference_options(config: LLFlowConfig) -> _Options:
    """The reference's options dict (as its ``confs/*.yml`` parse to) for a model of ``config``."""
    unknown = sorted(f.name for f in dataclasses.fields(config) if f.name not in _EXPRESSED)
    if unknown:
        raise ValueError(f"LLFlowConfig field(s) {unknown} cannot be expressed in the reference's options")
    return _options({
        "scale": 1,
        "cond_encoder": "ConEncoder1",
        "concat_histeq": True,  # the 6-channel input [log(low + 1e-3), histeq]
        "train_gt_ratio": config.train_gt_ratio,
        # The flow assigns layers to levels from the training patch size. Any multiple of 8 works
        # at run time. 160 is the released configs' value.
        "datasets": {"train": {"GT_size": 160}},
        "network_G": {"flow": {
            "K": config.steps_per_level,
            "L": 3,
            "coupling": "CondAffineSeparatedAndCond",
            "additionalFlowNoAffine": config.transition_steps,
            # The couplings read their conditioning width from here, not from the encoder.
            "conditionInFeaDim": config.cond_channels,
            "stackRRDB": {"blocks": list(config.stack_blocks), "concat": True},
            "CondAffineSeparatedAndCond": {"hidden_channels": config.hidden_channels,
                                           "eps": config.affine_eps},
            "split": {"enable": False},
        }},
    })


def _code_dir(path: Path) -> Path:
    for candidate in (path / "code", path):
        if (candidate / "models" / "modules" / "LLFlow_arch.py").is_file():
            return candidate.resolve()
    raise FileNotFoundError(
        f"{path} is not a checkout of wyf0912/LLFlow: no code/models/modules/LLFlow_arch.py under it"
    )


def _stand_in(name: str) -> types.ModuleType:
    module = types.ModuleType(name, f"stand-in for the missing {name!r}, which the LLFlow network does not use")

    def attribute(attr: str) -> Callable[..., None]:
        if attr.startswith("__"):
            raise AttributeError(attr)

        def unavailable(*args: object, **kwargs: object) -> None:
            raise RuntimeError(f"{name}.{attr} is not installed (stubbed while importing the reference)")
        return unavailable

    module.__getattr__ = attribute
    return module


@contextlib.contextmanager
def _missing_packages_stubbed() -> Iterator[None]:
    added = []
    for name, submodules in _OPTIONAL_IMPORTS.items():
        if importlib.util.find_spec(name) is None:
            added.append(name)
            sys.modules[name] = _stand_in(name)
            for sub in submodules:
                added.append(f"{name}.{sub}")
                sys.modules[f"{name}.{sub}"] = _stand_in(f"{name}.{sub}")
                setattr(sys.modules[name], sub, sys.modules[f"{name}.{sub}"])
    try:
        yield
    finally:
        # The reference's modules keep what they imported; nothing else in the process sees a stub.
        for name in added:
            sys.modules.pop(name, None)


def _import_arch(code: Path) -> types.ModuleType:
    # The reference imports itself under the generic top-level names ``models`` and ``utils``.
    for name in ("models", "utils"):
        loaded = sys.modules.get(name)
        if loaded is not None and (code / name).resolve() not in {
            Path(p).resolve() for p in getattr(loaded, "__path__", [])
        }:
            raise ImportError(f"another module named {name!r} is already imported ({loaded!r}); "
                              f"the reference under {code} needs that name")
    if str(code) not in sys.path:
        sys.path.insert(0, str(code))
    with _missing_packages_stubbed(), warnings.catch_warnings():
        # The ``@autocast()`` on the reference's ``forward`` warns when it is defined (a deprecated
        # API, and no CUDA here). ``load_reference`` does not go through that decorator.
        warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.autocast", category=FutureWarning)
        warnings.filterwarnings("ignore", message="CUDA is not available", category=UserWarning)
        return importlib.import_module("models.modules.LLFlow_arch")


def load_reference(code_dir: Path, model: LLFlow) -> Callable[[Tensor, Tensor], Tensor]:
    """The reference's enhancement at ``model``'s weights, as ``fn(low, histeq) -> enhanced``.

    ``code_dir`` is a checkout of ``wyf0912/LLFlow`` (its root or its ``code/`` folder). The
    reference network is built from ``model.config`` and loaded strictly with
    ``to_official(model)``. Only its never-used parameters (``DEAD_PREFIXES``) may be absent. It
    runs in eval mode, in float32, on ``model``'s device.

    ``fn`` takes ``low`` and its precomputed ``histeq``, both ``(B, 3, H, W)`` in ``[0, 1]`` with
    ``H`` and ``W`` divisible by 8. It returns the reference's raw flow output (not clamped). Compare
    it with ``model.enhance(low, histeq=histeq, clamp=False)``.
    """
    if not isinstance(model, LLFlow):
        raise TypeError(f"load_reference expects a flowkit LLFlow, got {type(model).__name__}")
    config = model.config
    opt = reference_options(config)
    arch = _import_arch(_code_dir(Path(code_dir)))

    # Building the reference draws from torch's and numpy's global RNGs (its initialisers). Those
    # values are overwritten below. Restoring the RNG state keeps the caller's random streams as they were.
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        net = arch.LLFlow(in_nc=3, out_nc=3, nf=config.encoder_channels, nb=config.encoder_blocks,
                          gc=config.growth_channels, scale=1, K=config.steps_per_level, opt=opt)
    np.random.set_state(numpy_state)

    missing, unexpected = net.load_state_dict(to_official(model), strict=False)
    missing = [k for k in missing if not k.startswith(DEAD_PREFIXES)]
    if missing or unexpected:
        raise RuntimeError(f"the reference network does not match LLFlow({config}): "
                           f"missing {missing[:10]}, unexpected {unexpected[:10]}")
    # The reference keeps its ActNorms' "initialised" flag outside the state dict, so a loaded
    # network would re-initialise them from data in train mode. Set it, as its checkpoints assume.
    for module in net.modules():
        if hasattr(module, "inited"):
            module.inited = True
    device = next(model.parameters()).device
    net = net.to(device=device, dtype=torch.float32).eval()

    def enhance(low: Tensor, histeq: Tensor) -> Tensor:
        if low.dim() != 4 or low.shape[1] != 3 or histeq.shape != low.shape:
            raise ValueError(f"low and histeq must both be (B, 3, H, W), got {tuple(low.shape)} "
                             f"and {tuple(histeq.shape)}")
        if low.shape[2] % 8 or low.shape[3] % 8:
            raise ValueError(f"the reference needs H and W divisible by 8, got {tuple(low.shape[2:])}")
        low = low.to(device=device, dtype=torch.float32)
        histeq = histeq.to(device=device, dtype=torch.float32)
        # The reference's network input, as its test script builds it.
        lq = torch.cat([torch.log(low + 1e-3), histeq], dim=1)
        # What ``net(lr=lq, reverse=True)`` runs at test time, minus the ``@autocast()`` on its
        # ``forward``, which would put a CUDA run into fp16. The ``z`` argument is ignored: the
        # reference decodes the encoder's colour-map prior mean.
        with torch.no_grad():
            x, _ = net.reverse_flow(lq, None, y_onehot=None, eps_std=None, add_gt_noise=False)
        return x

    return enhance


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Compare the reference LLFlow's enhancement with flowkit's.")
    parser.add_argument("--reference-dir", type=Path, required=True, help="a checkout of wyf0912/LLFlow")
    parser.add_argument("--size", type=int, nargs=2, default=(64, 96), metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from llflow import make_images  # benchmarks/llflow.py, beside this file

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = LLFlow(LLFlowConfig.lol_small())
    # One training-mode pass initialises every ActNorm from data, as in benchmarks/llflow.py.
    low, high, histeq = make_images(4, 64, 64, cpu, seed=1)
    model.train()
    with torch.no_grad():
        model.loss(low, high, histeq=histeq)
    model.eval()

    reference = load_reference(args.reference_dir, model)
    low, _, histeq = make_images(1, *args.size, cpu, seed=2)
    ours = model.enhance(low, histeq=histeq, clamp=False)
    theirs = reference(low, histeq)
    diff = (ours - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    print(f"1x3x{args.size[0]}x{args.size[1]}: max |flowkit - reference| = {diff:.3g} "
          f"(outputs up to {scale:.3g} in magnitude)")
    if not diff <= 1e-4 * max(1.0, scale):
        sys.exit("mismatch: flowkit's enhance differs from the reference")


if __name__ == "__main__":
    main()
