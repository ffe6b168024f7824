"""LLFlow (Wang et al., AAAI 2022): low-light enhancement with a conditional normalizing flow.

One concept per module: :mod:`.config` (sizes and presets), :mod:`.histeq` (OpenCV-exact
histogram equalization), :mod:`.encoder` (the RRDB conditional encoder), :mod:`.flow` (the
conditional flow), :mod:`.model` (:class:`LLFlow`), :mod:`.convert` (reference checkpoints),
:mod:`.pretrained` (the trained weights shipped with flowkit).
"""

from flowkit.models.llflow.config import LLFlowConfig
from flowkit.models.llflow.model import LLFlow

__all__ = ["LLFlow", "LLFlowConfig"]
