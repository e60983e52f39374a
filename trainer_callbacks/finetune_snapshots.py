"""Finetuning snapshots: plain `save_pretrained` folders at budget markers and at the end of training."""

import dataclasses
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState
from transformers.utils import logging

from budget_bert.clock import BudgetClock
from budget_bert.secrets import redact_secrets
from budget_bert.snapshots import (
    END_SNAPSHOT_NAME,
    RUN_ARGUMENTS_FILE,
    SNAPSHOT_INFO_FILE,
    SNAPSHOTS_DIR,
    snapshot_name,
)
from trainer_callbacks.exported_state import RestoresOwnState, restore_exported_attributes


logger = logging.get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class SnapshotInfo:
    """What a finetuning snapshot is: its name, the marker it was taken for (`None` at the end), and when."""

    name: str
    marker: float | None
    global_step: int
    elapsed_seconds: float
    budget_fraction: float


class FinetuneSnapshotCallback(RestoresOwnState, ExportableState):
    """
    Saves a finetuning snapshot at the first step end at or past each of `markers` (fractions of the budget) and,
    if `save_at_end`, when training ends, into `<output_dir>/finetune_snapshots/<name>/` (`marker-0.50`, ...,
    `end`). A snapshot is a `save_pretrained` folder (safetensors weights and config), the tokenizer (the
    Trainer's `processing_class`), `run_arguments.json` (the TrainingArguments and `run_arguments`, secrets redacted)
    and `snapshot_info.json` ([`SnapshotInfo`]); it loads with `AutoModelForSequenceClassification.from_pretrained`.

    Only the main process writes. A snapshot is written to a temporary folder and then renamed, so a crash cannot
    leave a half-written one under its final name. The markers already taken are exported into every checkpoint's
    `trainer_state.json` and restored on resume: no marker is saved twice. (A marker taken after the checkpoint a
    run resumes from is taken again, replacing the folder.) Under DeepSpeed, ZeRO stages 1 and 2 only: ZeRO-3
    shards the weights that `save_pretrained` would write.

    Args:
        clock (`BudgetClock`): The run's clock, ticked by [`~trainer_callbacks.BudgetCallback`].
        markers (`Sequence[float]`, *optional*): Fractions of the budget, in `(0, 1]`.
        save_at_end (`bool`, *optional*, defaults to `True`): Also save a snapshot named `end` when training ends
            (not when it is interrupted, see [`~trainer_callbacks.PreemptionCallback`]).
        run_arguments (`Mapping[str, Any]`, *optional*): More arguments to record next to the TrainingArguments,
            e.g. `{"ModelArguments": dataclasses.asdict(model_args), ...}`.
        on_snapshot (`Callable[[Path, SnapshotInfo], None]`, *optional*): Called on the main process after each
            snapshot is in place (e.g. to queue a push to the Hub).
    """

    def __init__(
        self,
        clock: BudgetClock,
        markers: Sequence[float] = (),
        save_at_end: bool = True,
        run_arguments: Mapping[str, Any] | None = None,
        on_snapshot: Callable[[Path, SnapshotInfo], None] | None = None,
    ):
        markers = sorted(markers)
        problems = [f"{m} is not in (0, 1]" for m in markers if not 0 < m <= 1]
        if len({snapshot_name(m) for m in markers}) != len(markers):
            problems.append("two markers share a name: give distinct markers")
        if problems:
            raise ValueError(f"--finetune_time_markers {','.join(map(str, markers))}: " + "; ".join(problems) + ".")
        self.clock = clock
        self.markers = markers
        self.save_at_end = save_at_end
        self.run_arguments = dict(run_arguments or {})
        self.on_snapshot = on_snapshot
        self.taken_markers: list[float] = []

    def state(self) -> dict:
        return {"args": {}, "attributes": {"taken_markers": list(self.taken_markers)}}

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.taken_markers = list(restore_exported_attributes(state, self).get("taken_markers", []))

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        for marker in self.markers:
            if marker not in self.taken_markers and self.clock.fraction >= marker:
                self._snapshot(args, state, snapshot_name(marker), marker, **kwargs)
                self.taken_markers.append(marker)
        return control

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        # An interrupted (preempted) run has not ended: the run that resumes it takes the `end` snapshot.
        if self.save_at_end and not self.clock.interrupted:
            self._snapshot(args, state, END_SNAPSHOT_NAME, None, **kwargs)

    def _snapshot(self, args, state, name, marker, model=None, processing_class=None, **kwargs) -> None:
        if not state.is_world_process_zero:
            return
        info = SnapshotInfo(name, marker, state.global_step, self.clock.elapsed, self.clock.fraction)
        root = Path(args.output_dir) / SNAPSHOTS_DIR
        final, partial = root / name, root / f".{name}.partial"
        if partial.exists():
            shutil.rmtree(partial)
        model.save_pretrained(partial)
        if processing_class is not None:
            processing_class.save_pretrained(partial)
        arguments = {**self.run_arguments, "TrainingArguments": args.to_dict()}
        (partial / RUN_ARGUMENTS_FILE).write_text(json.dumps(redact_secrets(arguments), indent=2, default=str) + "\n")
        (partial / SNAPSHOT_INFO_FILE).write_text(json.dumps(dataclasses.asdict(info), indent=2) + "\n")
        if final.exists():
            logger.warning(f"Replacing the finetuning snapshot {final} (left by a run that resumed from before it).")
            shutil.rmtree(final)
        partial.rename(final)
        logger.info(
            f"Finetuning snapshot {final} at step {info.global_step}, {info.elapsed_seconds / 3600:.4g} h "
            f"({info.budget_fraction:.1%} of the budget)."
        )
        if self.on_snapshot is not None:
            self.on_snapshot(final, info)
