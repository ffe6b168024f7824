"""``LLFlow``: low-light enhancement with a conditional normalizing flow (Wang et al., AAAI 2022)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit.distributions import diag_gaussian_log_prob
from flowkit.layers import Squeeze
from flowkit.models.llflow import convert, pretrained
from flowkit.models.llflow.config import LLFlowConfig
from flowkit.models.llflow.encoder import ConditionEncoder, EncoderOutput, color_map, encoder_input
from flowkit.models.llflow.exposure import adjust_exposure
from flowkit.models.llflow.flow import ConditionalFlow
from flowkit.models.llflow.histeq import histeq_image
from flowkit.models.llflow.tiling import enhance_in_tiles

__all__ = ["LLFlow"]

# The latent is (B, 3 * 8 * 8, H/8, W/8): three squeezes by 2.
_MULTIPLE = 8
_PRECISIONS = ("float32", "bfloat16")


def _check_image(method: str, name: str, image: object) -> Tensor:
    if not isinstance(image, Tensor):
        raise TypeError(f"LLFlow.{method}: {name} must be a torch.Tensor, got {type(image).__name__}")
    if not image.is_floating_point():
        raise TypeError(
            f"LLFlow.{method}: {name} must be a floating-point tensor with values in [0, 1], "
            f"got {image.dtype}"
            + (" (convert uint8 images with image.float() / 255)" if image.dtype == torch.uint8 else "")
        )
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(
            f"LLFlow.{method}: {name} must be an RGB batch of shape (B, 3, H, W), got {tuple(image.shape)}"
        )
    if image.numel() == 0:
        raise ValueError(f"LLFlow.{method}: {name} is empty, shape {tuple(image.shape)}")
    if torch.compiler.is_compiling():
        return image
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"LLFlow.{method}: {name} contains NaN or infinite values")
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"LLFlow.{method}: {name} must have values in [0, 1], got values in [{low:.4g}, {high:.4g}]"
        )
    return image


def _check_same_shape(method: str, name: str, other: Tensor, low: Tensor) -> None:
    if other.shape != low.shape:
        raise ValueError(
            f"LLFlow.{method}: {name} must have the shape of low {tuple(low.shape)}, got {tuple(other.shape)}"
        )


def _check_multiple(method: str, image: Tensor) -> None:
    h, w = image.shape[2:]
    if h % _MULTIPLE or w % _MULTIPLE:
        raise ValueError(
            f"LLFlow.{method} needs H and W divisible by {_MULTIPLE}, got H={h}, W={w}; crop the images "
            "(only enhance pads internally)"
        )


def _pad_to_multiple(image: Tensor) -> Tensor:
    h, w = image.shape[2:]
    pad_h, pad_w = (-h) % _MULTIPLE, (-w) % _MULTIPLE
    if not pad_h and not pad_w:
        return image
    # Reflection (as the reference's test scripts pad); it needs the pad shorter than the side.
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(image, (0, pad_w, 0, pad_h), mode=mode)


class LLFlow(nn.Module):
    r"""LLFlow: a conditional normalizing flow from normally-lit images to a latent whose prior is
    a Gaussian centred on the low-light image's colour map (Wang et al., AAAI 2022).

    Two parts, both built from flowkit's public blocks:

    * ``encoder``, a :class:`~flowkit.models.llflow.encoder.ConditionEncoder` on the 6-channel input
      ``[log(low + 1e-3), histeq(low)]``; it gives one conditioning feature map per flow level and
      a predicted colour map;
    * ``flow``, a :class:`~flowkit.models.llflow.flow.ConditionalFlow` mapping the normal-light
      image ``high`` ``(B, 3, H, W)`` to ``z`` ``(B, 192, H/8, W/8)``.

    The prior is :math:`\mathcal N(\mu, I)` with :math:`\mu` = ``Squeeze(8)`` of a colour map
    ``x / (sum_c x + 1e-4)``: the encoder's prediction, or, during training with probability
    ``train_gt_ratio``, the ground truth's. Enhancement decodes :math:`z = \mu` (temperature 0,
    the reference's deterministic output) or samples :math:`z \sim \mathcal N(\mu, T^2 I)`.

    Inputs are float tensors ``(B, 3, H, W)`` in ``[0, 1]``; they are cast to the model's dtype
    and device. Every method that takes ``low`` also accepts ``histeq``, the per-channel histogram
    equalization of ``low`` as floats in ``[0, 1]`` (a training pipeline computes it on the full
    image before cropping, as the reference does); when it is ``None`` it is computed from ``low``
    quantized to uint8 (:func:`~flowkit.models.llflow.histeq.histeq_image`). The density methods
    (:meth:`encode`, :meth:`decode`, :meth:`nll`, :meth:`loss`) need ``H`` and ``W`` divisible by
    8; :meth:`enhance` takes any size.

    Args:
        config: the model's sizes; ``LLFlowConfig.lol()`` when omitted.

    References:
        Wang, Wan, Yang, Li, Chau, Kot, "Low-Light Image Enhancement with Normalizing Flow",
        AAAI 2022, arXiv:2109.05923.

    Example:
        >>> import torch
        >>> from flowkit.models import LLFlow, LLFlowConfig
        >>> config = LLFlowConfig(encoder_channels=8, encoder_blocks=2, growth_channels=4,
        ...                       stack_blocks=(1,), steps_per_level=1, transition_steps=1, hidden_channels=8)
        >>> model = LLFlow(config).eval()
        >>> low, high = torch.rand(2, 3, 16, 16) * 0.2, torch.rand(2, 3, 16, 16)
        >>> model.nll(low, high).shape, model.enhance(low[:, :, :13, :10]).shape
        (torch.Size([2]), torch.Size([2, 3, 13, 10]))
    """

    pretrained_card: dict[str, str] | None = None
    """The model card entries of a shipped model (:meth:`from_pretrained`), ``None`` for any other."""

    def __init__(self, config: LLFlowConfig | None = None) -> None:
        super().__init__()
        config = LLFlowConfig.lol() if config is None else config
        if not isinstance(config, LLFlowConfig):
            raise TypeError(f"LLFlow expects an LLFlowConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = ConditionEncoder(
            config.encoder_channels, config.encoder_blocks, config.growth_channels, config.stack_blocks
        )
        self.flow = ConditionalFlow(
            config.cond_channels, config.steps_per_level, config.transition_steps,
            config.hidden_channels, config.affine_eps, memory=config.memory,
        )
        self.prior_squeeze = Squeeze(_MULTIPLE)

    # -- inputs -----------------------------------------------------------------------------------

    def _anchor(self) -> Tensor:
        return self.encoder.conv_first.weight

    def _image(self, method: str, name: str, image: object) -> Tensor:
        image = _check_image(method, name, image)
        anchor = self._anchor()
        return image.to(device=anchor.device, dtype=anchor.dtype)

    def _low_and_histeq(self, method: str, low: object, histeq: object | None) -> tuple[Tensor, Tensor]:
        low = self._image(method, "low", low)
        if histeq is None:
            return low, histeq_image(low)
        histeq = self._image(method, "histeq", histeq)
        _check_same_shape(method, "histeq", histeq, low)
        return low, histeq

    def preprocess(self, low: Tensor, *, histeq: Tensor | None = None) -> Tensor:
        """The encoder's 6-channel input ``cat[log(low + 1e-3), histeq]`` (no padding).

        Args:
            low: the low-light images, ``(B, 3, H, W)`` in ``[0, 1]``.
            histeq: their histogram-equalised versions (same shape), as a data pipeline
                precomputes them; ``None`` (default) computes them from ``low``.

        Example:
            >>> import torch
            >>> from flowkit.models import LLFlow, LLFlowConfig
            >>> model = LLFlow(LLFlowConfig(encoder_channels=4, encoder_blocks=1, growth_channels=4,
            ...                             stack_blocks=(), steps_per_level=1, hidden_channels=4))
            >>> model.preprocess(torch.zeros(1, 3, 4, 4))[0, :, 0, 0].tolist()[:4]
            [-6.907755374908447, -6.907755374908447, -6.907755374908447, 0.0]
        """
        low, histeq = self._low_and_histeq("preprocess", low, histeq)
        return encoder_input(low, histeq)

    def condition(self, low: Tensor, *, histeq: Tensor | None = None) -> EncoderOutput:
        """Run the encoder: per-level conditioning features and the predicted colour map.

        ``H`` and ``W`` must be divisible by 8.

        Args:
            low: the low-light images, ``(B, 3, H, W)`` in ``[0, 1]``.
            histeq: their histogram-equalised versions (same shape), as a data pipeline
                precomputes them; ``None`` (default) computes them from ``low``.

        Example:
            >>> import torch
            >>> from flowkit.models import LLFlow, LLFlowConfig
            >>> model = LLFlow(LLFlowConfig(encoder_channels=4, encoder_blocks=1, growth_channels=4,
            ...                             stack_blocks=(), steps_per_level=1, hidden_channels=4))
            >>> model.condition(torch.rand(1, 3, 8, 8)).color_map.shape
            torch.Size([1, 3, 8, 8])
        """
        low, histeq = self._low_and_histeq("condition", low, histeq)
        _check_multiple("condition", low)
        return self.encoder(encoder_input(low, histeq))

    def prior_mean(self, colors: Tensor) -> Tensor:
        """``Squeeze(8)`` of a colour map ``(B, 3, H, W)``: the prior mean ``(B, 192, H/8, W/8)``.

        One squeeze by 8 (channel ``c * 64 + i * 8 + j``), not three squeezes by 2.

        Args:
            colors: a colour map ``(B, 3, H, W)`` (the encoder's, or :func:`~flowkit.models.llflow.encoder.color_map`
                of a normal-light image), ``H`` and ``W`` divisible by 8.

        Example:
            >>> import torch
            >>> from flowkit.models import LLFlow, LLFlowConfig
            >>> model = LLFlow(LLFlowConfig(encoder_channels=4, encoder_blocks=1, growth_channels=4,
            ...                             stack_blocks=(), steps_per_level=1, hidden_channels=4))
            >>> model.prior_mean(torch.rand(2, 3, 16, 8)).shape
            torch.Size([2, 192, 2, 1])
        """
        return self.prior_squeeze(colors)[0]

    # -- density ----------------------------------------------------------------------------------

    def encode(self, high: Tensor, low: Tensor, *, histeq: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map the normal-light ``high`` to the latent ``z`` given ``low``; returns ``(z, logdet)``.

        ``z`` is ``(B, 192, H/8, W/8)`` in the reference's channel order and ``logdet`` the flow's
        log-determinant per sample ``(B,)``.

        Args:
            high: the normal-light images, ``(B, 3, H, W)``, the shape of ``low``; ``H`` and ``W``
                divisible by 8.
            low: the low-light images, ``(B, 3, H, W)`` in ``[0, 1]``.
            histeq: their histogram-equalised versions (same shape), as a data pipeline
                precomputes them; ``None`` (default) computes them from ``low``.

        Example:
            >>> import torch
            >>> from flowkit.models import LLFlow, LLFlowConfig
            >>> model = LLFlow(LLFlowConfig(encoder_channels=4, encoder_blocks=1, growth_channels=4,
            ...                             stack_blocks=(), steps_per_level=1, hidden_channels=4)).eval()
            >>> low, high = torch.rand(1, 3, 8, 16), torch.rand(1, 3, 8, 16)
            >>> z, logdet = model.encode(high, low)
            >>> z.shape, torch.allclose(model.decode(z, low)[0], high, atol=1e-4)
            (torch.Size([1, 192, 1, 2]), True)
        """
        low, histeq = self._low_and_histeq("encode", low, histeq)
        high = self._image("encode", "high", high)
        _check_same_shape("encode", "high", high, low)
        _check_multiple("encode", low)
        features = self.encoder(encoder_input(low, histeq))
        return self.flow(high, features.conditions)

    def decode(self, z: Tensor, low: Tensor, *, histeq: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map a latent ``z`` ``(B, 192, H/8, W/8)`` to an image given ``low``; returns ``(x, logdet)``.

        No clamping: ``x`` is the raw flow output. ``logdet`` is ``log|det dx/dz|`` per sample.

        Args:
            z: the latent, a floating-point tensor ``(B, 192, H/8, W/8)`` for ``low`` of size
                ``H x W``; another shape raises a :class:`ValueError`.
            low: the low-light images, ``(B, 3, H, W)`` in ``[0, 1]``.
            histeq: their histogram-equalised versions (same shape), as a data pipeline
                precomputes them; ``None`` (default) computes them from ``low``.
                ``H`` and ``W`` must be divisible by 8.

        Example:
            >>> import torch
            >>> from flowkit.models import LLFlow, LLFlowConfig
            >>> model = LLFlow(LLFlowConfig(encoder_channels=4, encoder_blocks=1, growth_channels=4,
            ...                             stack_blocks=(), steps_per_level=1, hidden_channels=4)).eval()
            >>> x, logdet = model.decode(torch.zeros(1, 192, 1, 1), torch.rand(1, 3, 8, 8))
            >>> x.shape
            torch.Size([1, 3, 8, 8])
        """
        low, histeq = self._low_and_histeq("decode", low, histeq)
        _check_multiple("decode", low)
        if not isinstance(z, Tensor):
            raise TypeError(f"LLFlow.decode: z must be a torch.Tensor, got {type(z).__name__}")
        b, _, h, w = low.shape
        expected = (b, self.flow.latent_channels, h // _MULTIPLE, w // _MULTIPLE)
        if tuple(z.shape) != expected:
            raise ValueError(f"LLFlow.decode: z must have shape {expected} for low {tuple(low.shape)}, "
                             f"got {tuple(z.shape)}")
        if not z.is_floating_point():
            raise TypeError(f"LLFlow.decode: z must be a floating-point tensor, got {z.dtype}")
        features = self.encoder(encoder_input(low, histeq))
        return self.flow.inverse(z.to(low), features.conditions)

    def _nll_parts(
        self, method: str, low: Tensor, high: Tensor, histeq: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        low, histeq = self._low_and_histeq(method, low, histeq)
        high = self._image(method, "high", high)
        _check_same_shape(method, "high", high, low)
        _check_multiple(method, low)
        features = self.encoder(encoder_input(low, histeq))
        z, logdet = self.flow(high, features.conditions)
        return z, logdet, self.prior_mean(features.color_map), self.prior_mean(color_map(high))

    @staticmethod
    def _bits_per_pixel(z: Tensor, logdet: Tensor, mean: Tensor) -> Tensor:
        # The reference divides by the pixel count H*W, not by C*H*W: bits per pixel.
        pixels = z.shape[2] * z.shape[3] * _MULTIPLE * _MULTIPLE
        return -(logdet + diag_gaussian_log_prob(z, mean)) / (math.log(2.0) * pixels)

    def nll(
        self, low: Tensor, high: Tensor, *, prior: Literal["encoder", "gt"] = "encoder",
        histeq: Tensor | None = None,
    ) -> Tensor:
        """Per-sample negative log-likelihood of ``high`` given ``low``, in bits per pixel, shape ``(B,)``.

        ``-(logdet + log N(z; mean, I)) / (ln 2 * H * W)``, with ``mean`` from the encoder's colour
        map (``prior="encoder"``) or from ``high``'s (``prior="gt"``). No dequantisation noise is
        added, as in the reference's training.

        Args:
            low: the low-light images, ``(B, 3, H, W)`` in ``[0, 1]``.
            histeq: their histogram-equalised versions (same shape), as a data pipeline
                precomputes them; ``None`` (default) computes them from ``low``.
            high: the normal-light images, the shape of ``low``.
            prior: ``"encoder"`` (default) or ``"gt"``, where the prior mean comes from.

        Example:
            >>> import torch
            >>> from flowkit.models import LLFlow, LLFlowConfig
            >>> model = LLFlow(LLFlowConfig(encoder_channels=4, encoder_blocks=1, growth_channels=4,
            ...                             stack_blocks=(), steps_per_level=1, hidden_channels=4)).eval()
            >>> model.nll(torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8), prior="gt").shape
            torch.Size([3])
        """
        if prior not in ("encoder", "gt"):
            raise ValueError(f"LLFlow.nll: prior must be 'encoder' or 'gt', got {prior!r}")
        z, logdet, mean_encoder, mean_gt = self._nll_parts("nll", low, high, histeq)
        return self._bits_per_pixel(z, logdet, mean_encoder if prior == "encoder" else mean_gt)

    def loss(
        self, low: Tensor, high: Tensor, generator: torch.Generator | None = None, *,
        histeq: Tensor | None = None,
    ) -> Tensor:
        """The training objective: the batch mean of :meth:`nll`, with one random prior per batch.

        One uniform draw ``u`` per call (from ``generator``, or torch's global RNG): the prior mean
        is the ground truth's colour map if ``u < train_gt_ratio``, the encoder's otherwise. The
        encoder's colour-map head learns only through this term. The choice is made with
        ``torch.where`` (no host sync).

        Args:
            low: the low-light images, ``(B, 3, H, W)`` in ``[0, 1]``.
            histeq: their histogram-equalised versions (same shape), as a data pipeline
                precomputes them; ``None`` (default) computes them from ``low``.
            high: the normal-light images, the shape of ``low``.
            generator: the random generator for the prior choice (default: torch's global one).

        Example:
            >>> import torch
            >>> from flowkit.models import LLFlow, LLFlowConfig
            >>> model = LLFlow(LLFlowConfig(encoder_channels=4, encoder_blocks=1, growth_channels=4,
            ...                             stack_blocks=(), steps_per_level=1, hidden_channels=4))
            >>> low, high = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
            >>> loss = model.loss(low, high, torch.Generator().manual_seed(0))
            >>> loss.backward(); loss.shape
            torch.Size([])
        """
        z, logdet, mean_encoder, mean_gt = self._nll_parts("loss", low, high, histeq)
        device = generator.device if generator is not None else torch.device("cpu")
        draw = torch.rand((), generator=generator, device=device).to(z.device)
        mean = torch.where(draw < self.config.train_gt_ratio, mean_gt, mean_encoder)
        return self._bits_per_pixel(z, logdet, mean).mean()

    # -- enhancement ------------------------------------------------------------------------------

    @torch.no_grad()
    def enhance(
        self, low: Tensor, *, temperature: float = 0.0, clamp: bool = True,
        generator: torch.Generator | None = None, histeq: Tensor | None = None,
        precision: Literal["float32", "bfloat16"] = "float32", exposure: float | None = None,
        tile: int | None = None, overlap: int = 32,
    ) -> Tensor:
        """Enhance low-light images ``(B, 3, H, W)`` in ``[0, 1]``; returns ``(B, 3, H, W)``.

        Temperature 0 decodes the prior mean (the encoder's colour map), which is the reference's
        deterministic output; ``T > 0`` decodes ``z = mean + T * eps`` with ``eps`` standard normal
        drawn from ``generator``. Any ``H`` and ``W``: ``low`` (and ``histeq``, computed before
        padding from the unpadded image) is padded at the bottom and right to a multiple of 8 by
        reflection (by edge replication when the image is smaller than the padding), and the
        output is cropped back. ``clamp=False`` returns the raw flow output instead of clamping to
        ``[0, 1]``. Runs without autograd; use :meth:`decode` for a differentiable reverse pass.

        ``precision="bfloat16"`` runs the network under ``torch.autocast`` in bfloat16 (the
        convolutions in bfloat16; the prior mean, the affine maps and the output stay float32),
        faster on CPUs with AMX and close to the float32 output (:ref:`measured-design-choices`).
        On CPU the network runs on channels-last tensors, which oneDNN's convolutions want; the
        output is float32 (or ``low``'s dtype) in the usual layout.

        ``exposure`` changes the model's choice of brightness by that many stops (EV) with
        :func:`~flowkit.models.llflow.exposure.adjust_exposure`: a tone curve that brightens or
        darkens shadows and mid-tones, compresses highlights instead of clipping them, and keeps
        every pixel's hue and saturation.

        ``tile`` enhances an image larger than ``tile`` pixels on a side in overlapping square
        tiles (:func:`~flowkit.models.llflow.tiling.enhance_in_tiles`), which bounds the memory
        that a large photograph needs; the histogram equalization still sees the whole image.

        Args:
            low: the low-light images, ``(B, 3, H, W)`` in ``[0, 1]``, any ``H`` and ``W``.
            temperature: ``T``, a finite number ``>= 0`` (default 0, the deterministic output).
            clamp: clamp the output to ``[0, 1]`` (default ``True``).
            generator: the random generator for ``eps`` when ``T > 0`` (default: torch's global one).
            histeq: the histogram-equalised ``low`` (same shape), or ``None`` (default) to compute it.
            precision: ``"float32"`` (default) or ``"bfloat16"``.
            exposure: ``None`` (default) for the model's own exposure, or a finite number of
                stops: positive brightens, negative darkens. Needs ``clamp=True``.
            tile: ``None`` (default) for the whole image at once, or the side of the tiles in
                pixels, a multiple of 8 larger than ``2 * overlap``.
            overlap: the pixels neighbouring tiles share and blend over (default 32).

        Example:
            >>> import torch
            >>> from flowkit.models import LLFlow, LLFlowConfig
            >>> model = LLFlow(LLFlowConfig(encoder_channels=4, encoder_blocks=1, growth_channels=4,
            ...                             stack_blocks=(), steps_per_level=1, hidden_channels=4)).eval()
            >>> out = model.enhance(torch.rand(1, 3, 9, 11) * 0.1, temperature=0.5,
            ...                     generator=torch.Generator().manual_seed(0))
            >>> out.shape, bool(out.min() >= 0 and out.max() <= 1)
            (torch.Size([1, 3, 9, 11]), True)
        """
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"LLFlow.enhance: temperature must be a finite number >= 0, got {temperature!r}")
        if precision not in _PRECISIONS:
            raise ValueError(f"LLFlow.enhance: precision must be one of {_PRECISIONS}, got {precision!r}")
        if exposure is not None:
            if isinstance(exposure, bool) or not isinstance(exposure, (int, float)) or not math.isfinite(exposure):
                raise ValueError(f"LLFlow.enhance: exposure must be None or a finite number of stops, got {exposure!r}")
            if not clamp:
                raise ValueError("LLFlow.enhance: exposure needs clamp=True (the tone curve works on [0, 1])")
        dtype = low.dtype if isinstance(low, Tensor) else None
        low, histeq = self._low_and_histeq("enhance", low, histeq)
        if tile is not None:
            options = {"temperature": temperature, "clamp": clamp, "generator": generator, "precision": precision}
            x = enhance_in_tiles(lambda part, part_histeq: self.enhance(part, histeq=part_histeq, **options),
                                 low, histeq, tile, overlap)
            # The tone curve after blending: it sees the image the tiles make up.
            return (x if exposure is None else adjust_exposure(x, exposure)).to(dtype)
        h, w = low.shape[2:]
        inputs = encoder_input(_pad_to_multiple(low), _pad_to_multiple(histeq))
        if inputs.device.type == "cpu":
            # Channels-last propagates through every convolution; oneDNN would otherwise reorder
            # each NCHW input and output. (Not applied on CUDA, where it has not been measured.)
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            features = self.encoder(inputs)
            # Keep only what the flow needs: the encoder's other outputs would stay alive (a few
            # feature maps at H/2) through the whole inverse pass.
            conditions, colors = features.conditions, features.color_map
            del features, inputs
            # float32 prior mean: the flow state starts at full precision whatever autocast did.
            z = self.prior_mean(colors.to(torch.promote_types(colors.dtype, torch.float32)))
            del colors
            if temperature > 0:
                device = generator.device if generator is not None else z.device
                eps = torch.randn(z.shape, generator=generator, device=device, dtype=z.dtype).to(z.device)
                z = z + temperature * eps
            x, _ = self.flow.inverse(z, conditions)
        # Back to NCHW, and to float32 from autocast's bfloat16 (float64 models stay float64).
        x = x[:, :, :h, :w].to(torch.promote_types(x.dtype, torch.float32)).contiguous()
        if clamp:
            x = x.clamp(0.0, 1.0)
        if exposure is not None:
            x = adjust_exposure(x, exposure)
        return x.to(dtype)

    # -- checkpoints ------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name: str | None = None) -> LLFlow:
        """A trained model shipped with flowkit, in eval mode, loaded offline from the package.

        ``name=None`` gives the default model (see
        :func:`flowkit.models.llflow.pretrained.pretrained_names`). The weights are safetensors
        (no pickle runs) and their sha256 is checked before they are read; the model card
        entries (training data, recipe, steps, hardware, metrics) are in ``pretrained_card``.
        The default model was trained on synthetic low-light pairs, not on LOL: see the model
        card in the docs.

        Args:
            name: the shipped model's name, or ``None`` (default) for the default model; an unknown
                name raises a :class:`ValueError` that lists the available ones.

        Example:
            >>> import torch
            >>> from flowkit.models import LLFlow
            >>> model = LLFlow.from_pretrained()
            >>> model.training, model.enhance(torch.full((1, 3, 24, 40), 0.03)).shape
            (False, torch.Size([1, 3, 24, 40]))
        """
        return pretrained.load_pretrained(name, model_class=cls)

    @classmethod
    def from_official(
        cls, checkpoint: str | Path | dict[str, Tensor], config: LLFlowConfig | None = None
    ) -> LLFlow:
        """Build an LLFlow from a checkpoint of the reference implementation.

        See :func:`flowkit.models.llflow.convert.from_official` (path or state dict, optional
        ``module.`` prefix, config inferred from the shapes when ``None``).

        Args:
            checkpoint: a path to the reference's ``.pth`` file, or its state dict.
            config: the model's configuration, or ``None`` (default) to infer it from the
                checkpoint's shapes.

        Example:
            >>> from flowkit.models import LLFlow, LLFlowConfig
            >>> from flowkit.models.llflow.convert import to_official
            >>> config = LLFlowConfig(encoder_channels=4, encoder_blocks=2, growth_channels=4,
            ...                       stack_blocks=(1,), steps_per_level=1, hidden_channels=4)
            >>> official = to_official(LLFlow(config))
            >>> LLFlow.from_official(official).config == config
            True
        """
        return convert.from_official(checkpoint, config, model_class=cls)
