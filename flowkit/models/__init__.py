"""Complete models built from flowkit's layers."""

from flowkit.models.llflow import LLFlow, LLFlowConfig

__all__ = ["LLFlow", "LLFlowConfig"]
