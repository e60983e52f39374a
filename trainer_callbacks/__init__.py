"""TrainerCallbacks that run a training inside a wall-clock budget with the stock `transformers.Trainer`.

A library of its own: it needs torch and transformers only, and works with any model. All time-aware callbacks
read one [`BudgetClock`] (`trainer_callbacks.clock`), which [`BudgetCallback`] starts, ticks once per optimizer step
and carries across resumes; the time-based learning rate follows the curves of `trainer_callbacks.lr_curves`. Each
callback handles one concern and acts through `control`.
"""

from trainer_callbacks.budget import BudgetCallback
from trainer_callbacks.budget_progress import BudgetProgressCallback
from trainer_callbacks.checkpoints import CompleteCheckpointCallback, ShardCheckpointCallback
from trainer_callbacks.clock import BudgetClock, ManualTime, ReplayClock
from trainer_callbacks.early_stopping import BudgetEarlyStoppingCallback
from trainer_callbacks.preemption import PreemptionCallback
from trainer_callbacks.schedule_record import ScheduleRecord, ScheduleRecordCallback
from trainer_callbacks.snapshots import FinetuneSnapshotCallback, SnapshotInfo
from trainer_callbacks.time_based_lr import TimeBasedLRCallback
from trainer_callbacks.validation_schedule import ValidationScheduleCallback


__all__ = [
    "BudgetCallback",
    "BudgetClock",
    "BudgetEarlyStoppingCallback",
    "BudgetProgressCallback",
    "CompleteCheckpointCallback",
    "FinetuneSnapshotCallback",
    "ManualTime",
    "PreemptionCallback",
    "ReplayClock",
    "ScheduleRecord",
    "ScheduleRecordCallback",
    "ShardCheckpointCallback",
    "SnapshotInfo",
    "TimeBasedLRCallback",
    "ValidationScheduleCallback",
]
