"""Training LLFlow: TOML configs, the training loop (single process or DDP), checkpoints.

``flowkit train --config lol.toml`` runs :func:`train`; ``torchrun --nproc_per_node N -m flowkit
train ...`` runs it on N processes with DistributedDataParallel.
"""

from flowkit.models.llflow.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    save_model,
    save_weights,
)
from flowkit.models.llflow.train.config import (
    DataSection,
    LossSection,
    OptimSection,
    RunSection,
    TrainConfig,
    load_config,
    shipped_configs,
)
from flowkit.models.llflow.train.ema import ExponentialMovingAverage
from flowkit.models.llflow.train.schedule import warmup_multistep
from flowkit.models.llflow.train.trainer import (
    TrainResult,
    build_datasets,
    emulated_autocast,
    epoch_batches,
    train,
    validate,
)

__all__ = [
    "DataSection",
    "ExponentialMovingAverage",
    "LossSection",
    "OptimSection",
    "RunSection",
    "TrainConfig",
    "TrainResult",
    "build_datasets",
    "capture_rng_state",
    "emulated_autocast",
    "epoch_batches",
    "load_checkpoint",
    "load_config",
    "restore_rng_state",
    "save_checkpoint",
    "save_model",
    "save_weights",
    "shipped_configs",
    "train",
    "validate",
    "warmup_multistep",
]
