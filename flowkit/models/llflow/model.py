"""``LLFlow``: low-light enhancement with a conditional normalizing flow (Wang et al., AAAI 2022)."""

from __future__ import annotations

import math
import warnings
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
# A sampled decode with a raw value beyond +-100 (or not finite) has diverged. The shipped v2's
# raw maxima on Kodak24 kodim08 are 1.1-1.5, but where a draw of eps takes the inverse couplings
# out of what training saw, their division by the sigmoid scale feeds on itself and a patch of
# the image runs to 1e19. (The tests' untrained toy model decodes to +-14, hence the wide bound.)
_DIVERGED = 100.0
# The temperatures, as fractions of the one asked for, at which an image's diverged pair is drawn
# again. A rare draw diverges once (v2's kodim08), so the first redraw keeps the temperature.
# Some inputs diverge at T = 1 in most draws, such as the saturated red shirt of LOL eval15 #146
# for the dequantised campaign's step-11,000 checkpoint: 3 of 3 seeded pairs at T = 1, 1 at 0.8
# and none at 0.7. After the last, the image gets the prior mean's decode (temperature 0).
_RETRIES = (1.0, 0.8, 0.6)
#: The distances ``LLFlow.loss``'s decode term can use, by name: each maps the error of the
#: enhanced pair to its per-element penalty. ``[loss] decode_distance`` is checked against it.
DECODE_DISTANCES = {"l1": torch.abs, "l2": torch.square}


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
    r"""LLFlow: a conditional flow from normally-lit images to a latent whose prior is a Gaussian
    centred on the low-light image's colour map (Wang et al., AAAI 2022).

    ``encoder`` (a :class:`~flowkit.models.llflow.encoder.ConditionEncoder`) gives one conditioning
    per flow level and a colour map; ``flow`` (a :class:`~flowkit.models.llflow.flow.ConditionalFlow`)
    maps ``high`` ``(B, 3, H, W)`` to ``z`` ``(B, 192, H/8, W/8)`` with prior :math:`\mathcal N(\mu, I)`,
    :math:`\mu` = ``Squeeze(8)`` of the colour map.

    Every method takes ``low``, float ``(B, 3, H, W)`` in ``[0, 1]``, and ``histeq``, its
    per-channel histogram equalization, or ``None`` to compute it from ``low``. The density methods
    need ``H`` and ``W`` divisible by 8; :meth:`enhance` takes any size.

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

    enhance_defaults: dict[str, float | int | None]
    """What :meth:`enhance` uses for the ``temperature``, ``average`` and generator ``seed`` a call
    leaves out. A new model's are the reference's single decode of the prior mean,
    :data:`~flowkit.models.llflow.pretrained.PRIOR_MEAN`; the shipped models' are
    :data:`~flowkit.models.llflow.pretrained.MEAN_OF_PAIR`, at temperature 0.8 for v3."""

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
        self.enhance_defaults = dict(pretrained.PRIOR_MEAN)

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
        """Map the normal-light ``high`` (shaped as ``low``) to ``z``; returns ``(z, logdet)``.

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

        ``x`` is the raw (unclamped) flow output.

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
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
        low, histeq = self._low_and_histeq(method, low, histeq)
        high = self._image(method, "high", high)
        _check_same_shape(method, "high", high, low)
        _check_multiple(method, low)
        features = self.encoder(encoder_input(low, histeq))
        z, logdet = self.flow(high, features.conditions)
        return z, logdet, self.prior_mean(features.color_map), self.prior_mean(color_map(high)), features.conditions

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

        ``-(logdet + log N(z; mean, I)) / (ln 2 * H * W)``, without dequantisation noise.

        Args:
            prior: the prior mean from the encoder's colour map (``"encoder"``) or ``high``'s (``"gt"``).

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
        z, logdet, mean_encoder, mean_gt, _ = self._nll_parts("nll", low, high, histeq)
        return self._bits_per_pixel(z, logdet, mean_encoder if prior == "encoder" else mean_gt)

    def loss(
        self, low: Tensor, high: Tensor, generator: torch.Generator | None = None, *,
        histeq: Tensor | None = None, decode_weight: float = 0.0, decode_temperature: float = 1.0,
        decode_distance: str = "l1",
    ) -> Tensor:
        """The training objective: the batch mean of :meth:`nll`, with one random prior per batch,
        plus an optional distance term on the enhancement itself.

        The prior mean is the ground truth's colour map with probability ``train_gt_ratio``, the
        encoder's otherwise. ``generator`` draws that choice.

        The reference trains on the likelihood alone (``decode_weight = 0``, the default). Its
        likelihood says nothing about decodes from latents that no ground truth encodes to, and a
        sampled decode can leave the data's range and diverge. With ``decode_weight = w > 0`` the
        loss adds ``w * mean |x_bar - high|`` (``decode_distance = "l1"``) or
        ``w * mean (x_bar - high)^2`` (``"l2"``), where
        ``x_bar = (f^-1(mu + T eps) + f^-1(mu - T eps)) / 2`` is the antithetic pair of decodes that
        :meth:`enhance` averages, ``mu`` the encoder's prior mean, ``T = decode_temperature`` and
        ``eps`` standard normal noise drawn from ``generator``: the loss then also scores what a user
        sees. (SRFlow's ``weight_l1`` is the L1 term at ``T = 0``.) The L1 distance pulls each pixel
        toward a median of what the encoder's condition allows; the squared one toward the mean,
        which is what PSNR rewards, with more weight on large errors. But the square of a decode
        that diverges (see :meth:`enhance`) can overflow to ``inf`` in float32, and ``flowkit
        train`` then skips the step; the L1 of such a decode stays finite, and gradient clipping
        bounds its step. The term costs two inverse passes of the flow with their backward.

        Args:
            low, high: the low-light input and its normal-light ground truth ``(B, 3, H, W)``.
            generator: draws the prior choice and the decode noise.
            histeq: ``low``'s histogram-equalised image (computed when left out).
            decode_weight: ``w``, a finite number ``>= 0``.
            decode_temperature: ``T``, a finite number ``>= 0``.
            decode_distance: ``"l1"`` (mean absolute error) or ``"l2"`` (mean squared error).

        Example:
            >>> import torch
            >>> from flowkit.models import LLFlow, LLFlowConfig
            >>> model = LLFlow(LLFlowConfig(encoder_channels=4, encoder_blocks=1, growth_channels=4,
            ...                             stack_blocks=(), steps_per_level=1, hidden_channels=4))
            >>> low, high = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
            >>> loss = model.loss(low, high, torch.Generator().manual_seed(0), decode_weight=0.5)
            >>> loss.backward(); loss.shape
            torch.Size([])
        """
        for name, value in (("decode_weight", decode_weight), ("decode_temperature", decode_temperature)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"LLFlow.loss: {name} must be a finite number >= 0, got {value!r}")
        if decode_distance not in DECODE_DISTANCES:
            raise ValueError(f"LLFlow.loss: decode_distance must be one of {sorted(DECODE_DISTANCES)}, "
                             f"got {decode_distance!r}")
        z, logdet, mean_encoder, mean_gt, conditions = self._nll_parts("loss", low, high, histeq)
        device = generator.device if generator is not None else torch.device("cpu")
        draw = torch.rand((), generator=generator, device=device).to(z.device)
        mean = torch.where(draw < self.config.train_gt_ratio, mean_gt, mean_encoder)
        loss = self._bits_per_pixel(z, logdet, mean).mean()
        if decode_weight == 0:
            return loss
        eps = torch.randn(z.shape, generator=generator, device=device, dtype=z.dtype).to(z.device)
        pair = [self.flow.inverse(mean_encoder + sign * decode_temperature * eps, conditions)[0]
                for sign in (1.0, -1.0)]
        return loss + decode_weight * DECODE_DISTANCES[decode_distance]((pair[0] + pair[1]) / 2 - high).mean()

    # -- enhancement ------------------------------------------------------------------------------

    @torch.no_grad()
    def enhance(
        self, low: Tensor, *, temperature: float | None = None, clamp: bool = True,
        generator: torch.Generator | None = None, histeq: Tensor | None = None,
        precision: Literal["float32", "bfloat16"] = "float32", exposure: float | None = None,
        tile: int | None = None, overlap: int = 32, average: int | None = None,
    ) -> Tensor:
        """Enhance low-light images ``(B, 3, H, W)`` in ``[0, 1]``; returns ``(B, 3, H, W)``.

        Decodes ``z = mean + T * eps`` (``T = 0``: the prior mean, the reference's output). The
        input is padded to a multiple of 8 and the output cropped back. No autograd (:meth:`decode` has it).

        ``average = n > 1`` returns the mean of ``n`` decodes, of ``mean + T * eps_i`` with the
        ``eps_i`` in antithetic pairs (``eps_2k+1 = -eps_2k``) and one encoder pass. At ``T = 1``
        this estimates the conditional mean ``E[x | low]``, the output that minimises the expected
        squared error, where the decode of the prior mean is only the image of the latent's mode: a
        flow bends the latent Gaussian, so the two differ, the more the sharper the trained density.
        A pair cancels the estimate's first-order noise in ``eps``; more pairs reduce the rest.
        A sampled decode can diverge where ``eps`` takes the inverse couplings beyond what training
        saw (their division by the scale then compounds, and a patch of the image runs to 1e19):
        a pair with a raw value beyond +-100 is drawn again, both its decodes, for that image: once
        at ``T``, then at ``0.8 T`` and ``0.6 T``, and an image that still diverges gets the prior
        mean's decode. A ``RuntimeWarning`` says which temperature an image got instead of ``T``.

        Options left out (``None``) come from :attr:`enhance_defaults`: a single decode of the prior
        mean for a model built here or from the reference's weights; the shipped models'
        (:meth:`from_pretrained`) average an antithetic pair at ``T = 1`` with a fixed seed.

        Args:
            temperature: ``T``, a finite number ``>= 0``.
            clamp: clamp the output to ``[0, 1]``; ``False`` returns the raw flow output.
            generator: the random generator for ``eps``; ``None`` seeds a new one with
                ``enhance_defaults["seed"]``, or draws from torch's global generator if that is ``None``.
            precision: ``"float32"``, or ``"bfloat16"`` autocast for the network, faster on CPUs with
                AMX (:ref:`measured-design-choices`).
            exposure: ``None``, or stops (EV) to brighten (positive) or darken the output with
                :func:`~flowkit.models.llflow.exposure.adjust_exposure`. Needs ``clamp=True``.
            tile: ``None``, or the side of overlapping square tiles (a multiple of 8 above
                ``2 * overlap``; :func:`~flowkit.models.llflow.tiling.enhance_in_tiles`) to bound memory.
            overlap: the pixels neighbouring tiles share and blend over.
            average: ``n``, the number of decodes averaged; ``n > 1`` needs ``T > 0``. ``None``: the
                default's if ``temperature`` is left out too, else 1 (one sample at that temperature).

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
        defaults = self.enhance_defaults
        if temperature is None:
            temperature = defaults["temperature"]
            average = defaults["average"] if average is None else average
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"LLFlow.enhance: temperature must be a finite number >= 0, got {temperature!r}")
        if precision not in _PRECISIONS:
            raise ValueError(f"LLFlow.enhance: precision must be one of {_PRECISIONS}, got {precision!r}")
        average = 1 if average is None else average  # a temperature alone asks for one sample
        if isinstance(average, bool) or not isinstance(average, int) or average < 1:
            raise ValueError(f"LLFlow.enhance: average must be an integer >= 1, got {average!r}")
        if average > 1 and temperature == 0:
            raise ValueError("LLFlow.enhance: average > 1 needs temperature > 0 (at temperature 0 every "
                             "decode is the same)")
        if exposure is not None:
            if isinstance(exposure, bool) or not isinstance(exposure, (int, float)) or not math.isfinite(exposure):
                raise ValueError(f"LLFlow.enhance: exposure must be None or a finite number of stops, got {exposure!r}")
            if not clamp:
                raise ValueError("LLFlow.enhance: exposure needs clamp=True (the tone curve works on [0, 1])")
        dtype = low.dtype if isinstance(low, Tensor) else None
        low, histeq = self._low_and_histeq("enhance", low, histeq)
        if generator is None and temperature > 0 and defaults["seed"] is not None:
            generator = torch.Generator(low.device).manual_seed(defaults["seed"])
        if tile is not None:
            options = {"temperature": temperature, "clamp": clamp, "generator": generator, "precision": precision,
                       "average": average}
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
            if temperature == 0:
                x, _ = self.flow.inverse(z, conditions)
            else:
                x = self._sampled_decodes(z, conditions, temperature, average, generator, h, w) / average
        # Back to NCHW, and to float32 from autocast's bfloat16 (float64 models stay float64).
        x = x[:, :, :h, :w].to(torch.promote_types(x.dtype, torch.float32)).contiguous()
        if clamp:
            x = x.clamp(0.0, 1.0)
        if exposure is not None:
            x = adjust_exposure(x, exposure)
        return x.to(dtype)

    def _sampled_decodes(self, z: Tensor, conditions: list[Tensor], temperature: float, average: int,
                         generator: torch.Generator | None, h: int, w: int) -> Tensor:
        """The sum of ``average`` decodes of ``z + T * eps_i`` (antithetic pairs), none diverged.

        A pair with a decode that diverges for an image (see ``_DIVERGED``) is drawn again, both
        its decodes, for that image, from the same generator, at the temperatures of ``_RETRIES``:
        a redraw of one decode alone would break the pair's cancellation of the noise. An image
        that diverges at all of them gets ``average`` times the prior mean's decode. A warning
        names the lowest temperature each such image got.
        """
        device = generator.device if generator is not None else z.device

        def diverged(x: Tensor) -> Tensor:  # (B,) bool; NaN fails the comparison too
            return ~(x[:, :, :h, :w].abs() <= _DIVERGED).flatten(1).all(1)

        def decode(signs: tuple[float, ...], t: float, index: Tensor | None = None) -> tuple[Tensor, Tensor]:
            """The sum of the decodes of ``z + sign * t * eps`` for one draw of eps, and which diverged."""
            mean, cond = (z, conditions) if index is None else (z[index], [c[index] for c in conditions])
            eps = torch.randn(mean.shape, generator=generator, device=device, dtype=z.dtype).to(z.device)
            xs = [self.flow.inverse(mean + sign * t * eps, cond)[0] for sign in signs]
            return sum(xs), torch.stack([diverged(x) for x in xs]).any(0)

        total, failed = 0.0, torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
        lowest = [temperature] * z.shape[0]  # the lowest temperature each image's pairs were decoded at
        for first in range(0, average, 2):
            signs = (1.0, -1.0) if first + 1 < average else (1.0,)
            part, bad = decode(signs, temperature)
            for fraction in _RETRIES:
                if not bad.any():
                    break
                index = bad.nonzero()[:, 0]
                again, still = decode(signs, fraction * temperature, index)
                part = part.index_copy(0, index, again.to(part.dtype))
                bad = bad.index_copy(0, index, still)
                for i in index.tolist():
                    lowest[i] = min(lowest[i], fraction * temperature)
            failed |= bad
            total = total + torch.where(bad[:, None, None, None], 0.0, part)
        if failed.any():
            index = failed.nonzero()[:, 0]
            prior = self.flow.inverse(z[index], [c[index] for c in conditions])[0]
            total = total.index_copy(0, index, (average * prior).to(total.dtype))
            for i in index.tolist():
                lowest[i] = 0.0
        if changed := [i for i, t in enumerate(lowest) if t < temperature]:
            def outcome(t: float) -> str:
                return "the prior mean (temperature 0)" if t == 0 else f"temperature {t:.3g}"

            if len(lowest) == 1:
                what = f"diverged; decoded instead at {outcome(lowest[0])}"
            else:
                what = (f"diverged for {len(changed)} of {len(lowest)} images; decoded instead: "
                        + ", ".join(f"image {i} at {outcome(lowest[i])}" for i in changed))
            warnings.warn(f"LLFlow.enhance: the decode at temperature {temperature} {what}", RuntimeWarning,
                          stacklevel=3)
        return total

    # -- checkpoints ------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name: str | None = None) -> LLFlow:
        """A trained model shipped with flowkit, in eval mode, loaded offline from the package.

        The model card entries are in ``pretrained_card`` (the default model was trained on
        synthetic pairs, not on LOL).

        Args:
            name: one of :func:`~flowkit.models.llflow.pretrained.pretrained_names`, or ``None`` for the default.

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

        Args: as for :func:`flowkit.models.llflow.convert.from_official`.

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
