"""TrainerCallbacks that run a pretraining inside a wall-clock budget with the stock `transformers.Trainer`.

All time-aware callbacks read one `budget_bert.clock.BudgetClock`, which `BudgetCallback` starts, ticks once per
optimizer step and carries across resumes. Each callback handles one concern and acts through `control`.
"""

from trainer_callbacks.budget import BudgetCallback
from trainer_callbacks.budget_progress import BudgetProgressCallback
from trainer_callbacks.checkpoints import ShardCheckpointCallback
from trainer_callbacks.complete_checkpoints import CompleteCheckpointCallback
from trainer_callbacks.early_stopping import BudgetEarlyStoppingCallback
from trainer_callbacks.finetune_snapshots import FinetuneSnapshotCallback, SnapshotInfo
from trainer_callbacks.preemption import PreemptionCallback
from trainer_callbacks.time_based_lr import TimeBasedLRCallback
from trainer_callbacks.validation_schedule import ValidationScheduleCallback


__all__ = [
    "BudgetCallback",
    "BudgetEarlyStoppingCallback",
    "BudgetProgressCallback",
    "CompleteCheckpointCallback",
    "FinetuneSnapshotCallback",
    "PreemptionCallback",
    "ShardCheckpointCallback",
    "SnapshotInfo",
    "TimeBasedLRCallback",
    "ValidationScheduleCallback",
]
