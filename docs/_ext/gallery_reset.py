"""Run every sphinx-gallery example from the same state, so that builds are reproducible."""

from __future__ import annotations

import torch

_THREADS = torch.get_num_threads()


def reset_torch(gallery_conf, fname) -> None:
    """One thread (float results independent of the machine's core count, and no oversubscription
    on a busy machine) and torch's default seed, before each example."""
    torch.set_num_threads(1)
    torch.manual_seed(0)


def restore_threads(app, exception) -> None:
    """Give the process its thread count back (the test suite builds the docs in-process)."""
    torch.set_num_threads(_THREADS)
