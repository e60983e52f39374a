"""What `run_mlm.py` builds from its checked arguments: tokenizer, data, model, budget callbacks, and the stock Trainer.

`build_pretraining` puts them together; `Pretraining.finish` and `Pretraining.close` end the run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import torch
from accelerate.utils import DynamoBackend
from datasets import Dataset
from transformers import (
    AutoModelForMaskedLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PrinterCallback,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainerState,
    TrainingArguments,
)
from transformers.integrations import TensorBoardCallback, get_reporting_integration_callbacks
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput
from transformers.utils import logging

from budget_bert.cli import ExpectedError, UsageError
from budget_bert.data.collator import DataCollatorForBertPretraining
from budget_bert.data.loading import load_prepared_dataset, steps_per_shard
from budget_bert.data.metadata import TOKENIZER_DIR
from budget_bert.data.prepare import build_mlm_datasets
from budget_bert.data.tokenization import load_tokenizer
from budget_bert.hub.model_card import ModelCardInfo
from budget_bert.hub.pusher import SnapshotPusher
from budget_bert.hub.redaction import redact_secrets
from budget_bert.pretraining.cpu_memory import keep_freed_memory
from budget_bert.pretraining.model_config import config_for_tokenizer
from budget_bert.pretraining.pretraining_arguments import (
    BudgetArguments,
    DataArguments,
    PretrainingArguments,
    global_batch_size,
)
from budget_bert.pretraining.resume import (
    EXIT_PREEMPTED,
    checkpoint_shape_problem,
    preemption_message,
    resume_command,
    write_preemption_note,
)
from trainer_callbacks import (
    BudgetCallback,
    BudgetClock,
    BudgetEarlyStoppingCallback,
    BudgetProgressCallback,
    CompleteCheckpointCallback,
    FinetuneSnapshotCallback,
    PreemptionCallback,
    ShardCheckpointCallback,
    SnapshotInfo,
    TimeBasedLRCallback,
    ValidationScheduleCallback,
)
from trainer_callbacks.checkpoints import CheckpointSaveError, failed_save_message
from trainer_callbacks.snapshots import SnapshotWriteError
from trainer_callbacks.schedule_record import ScheduleRecordCallback


logger = logging.get_logger(__name__)


@dataclass
class PretrainingData:
    """Training and validation examples, and how many optimizer steps one shard (the seed's "epoch") takes."""

    train: Dataset
    validation: Dataset | None
    examples_per_shard: int


def load_pretraining_tokenizer(args: PretrainingArguments) -> PreTrainedTokenizerBase:
    """`--tokenizer_name`, else the tokenizer saved with `--dataset_path`, else `--model_name_or_path`'s."""
    model_args, data_args = args.model, args.data
    if model_args.tokenizer_name:
        name, flag = model_args.tokenizer_name, "--tokenizer_name"
    elif data_args.dataset_path:
        name, flag = os.path.join(data_args.dataset_path, TOKENIZER_DIR), "--dataset_path"
    else:
        name, flag = model_args.model_name_or_path, "--model_name_or_path"
    return load_tokenizer(name, flag, trust_remote_code=model_args.trust_remote_code)


def _token_id_range(split: Dataset | None) -> tuple[int, int]:
    """The smallest and largest token id of `split` (`(0, 0)` for none), read by Arrow from the memory-mapped
    shards (a fraction of a second per GB once they are in the page cache)."""
    if split is None or len(split) == 0:
        return 0, 0
    extremes = pc.min_max(pc.list_flatten(split.data.column("input_ids"))).as_py()
    return extremes["min"] or 0, extremes["max"] or 0


def load_pretraining_data(
    data_args: DataArguments, tokenizer: PreTrainedTokenizerBase, training_args: TrainingArguments
) -> PretrainingData:
    """Prepared shards from `--dataset_path`, or raw text prepared on the fly (main process first, then cached)."""
    if data_args.dataset_path:
        train, validation, metadata = load_prepared_dataset(data_args.dataset_path)
        own = os.path.abspath(tokenizer.name_or_path) == os.path.abspath(
            os.path.join(data_args.dataset_path, TOKENIZER_DIR)
        )
        if metadata.vocab_size != len(tokenizer):
            fix = (
                f"its {TOKENIZER_DIR}/ folder was changed after preparation: prepare the data again" if own else
                "drop --tokenizer_name to use the data's own tokenizer, or prepare the data again"
            )
            raise ValueError(
                f"--dataset_path {data_args.dataset_path} was encoded with a {metadata.vocab_size}-token vocabulary "
                f"({metadata.tokenizer_name}), but the tokenizer has {len(tokenizer)}: {fix}."
            )
        for name, split in (("train", train), ("validation", validation)):
            lowest, highest = _token_id_range(split)
            if lowest < 0 or highest >= len(tokenizer):
                raise ValueError(
                    f"--dataset_path {data_args.dataset_path}: its {name} examples hold token id "
                    f"{highest if highest >= len(tokenizer) else lowest}, outside the {len(tokenizer)}-token "
                    "vocabulary: the shards were not encoded with this tokenizer (or were changed); prepare the data "
                    "again."
                )
        return PretrainingData(train, validation, metadata.examples_per_shard)
    with training_args.main_process_first(desc="preparing the pretraining data"):
        splits = build_mlm_datasets(data_args, tokenizer, training_args.seed)
    train = splits["train"]
    if len(train) < data_args.num_shards:
        raise ValueError(f"--num_shards {data_args.num_shards} exceeds the {len(train)} training examples.")
    return PretrainingData(train, splits.get("validation"), len(train) // data_args.num_shards)


def build_model(args: PretrainingArguments, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """
    The `--model_name_or_path` checkpoint to continue from, or a fresh model of the parsed config (BudgetBert, or any
    masked LM that `AutoModelForMaskedLM` knows) with the tokenizer's vocabulary and special tokens.
    """
    remote = args.model.trust_remote_code
    if args.model.model_name_or_path:
        # float32 whatever the checkpoint's dtype (a `--fp16` DeepSpeed run saves float16): mixed precision trains
        # float32 weights.
        return AutoModelForMaskedLM.from_pretrained(
            args.model.model_name_or_path, trust_remote_code=remote, dtype=torch.float32
        )
    config = config_for_tokenizer(args.model_config, tokenizer)
    return AutoModelForMaskedLM.from_config(config, trust_remote_code=remote)


def build_budget_callbacks(
    clock: BudgetClock,
    budget_args: BudgetArguments,
    shard_steps: int,
    run_arguments: dict,
    on_snapshot: Callable[[Path, SnapshotInfo], None] | None = None,
    save_total_limit: int | None = None,
    recorder: ScheduleRecordCallback | None = None,
) -> list[TrainerCallback]:
    """
    One callback per budget concern, all reading `clock`, and the crash-safety ones (clean stop on SIGTERM/SIGINT,
    complete checkpoints, rotation keeping at most `save_total_limit`). The progress bar is added by `build_trainer`.
    Every value was checked when the flags were parsed. `recorder` records the schedule: it comes right after the
    budget callback, and copies the record into each snapshot before `on_snapshot` sees it.
    """
    if recorder is not None:
        on_snapshot = _record_then(recorder, on_snapshot)
    wsd = budget_args.lr_schedule == "time" and budget_args.curve == "wsd"
    callbacks: list[TrainerCallback] = [
        BudgetCallback(clock, stop_after_seconds=budget_args.stop_seconds),
        *([recorder] if recorder is not None else []),
        PreemptionCallback(clock),
        CompleteCheckpointCallback(save_total_limit),
        # Always on for its NaN/inf check; the eval-loss threshold only with --use_early_stopping.
        BudgetEarlyStoppingCallback(
            clock,
            after_seconds=budget_args.early_stop_seconds,
            max_eval_loss=budget_args.early_stop_eval_loss if budget_args.use_early_stopping else float("inf"),
        ),
        FinetuneSnapshotCallback(
            clock,
            budget_args.markers,
            run_arguments=run_arguments,
            redact=redact_secrets,
            on_snapshot=on_snapshot,
            # What a cooldown resumes from: a wsd run holds the peak rate there (see budget_bert.cooldown).
            checkpoint_markers=budget_args.markers if wsd else (),
            end_name=budget_args.end_snapshot_name,
        ),
    ]
    if budget_args.lr_schedule == "time":
        callbacks.append(
            TimeBasedLRCallback(
                clock,
                budget_args.warmup_proportion,
                budget_args.curve,
                decay_rate=budget_args.decay_rate,
                decay_interval=budget_args.decay_interval,
                cooldown_proportion=budget_args.cooldown_proportion,
                cooldown_shape=budget_args.cooldown_shape,
            )
        )
    if budget_args.do_validation:
        callbacks.append(
            ValidationScheduleCallback(
                clock,
                shard_steps,
                validation_epochs=budget_args.validation_epochs,
                validation_epochs_begin=budget_args.validation_epochs_begin,
                validation_epochs_end=budget_args.validation_epochs_end,
                validation_begin_proportion=budget_args.validation_begin_proportion,
                validation_end_proportion=budget_args.validation_end_proportion,
            )
        )
    if budget_args.num_epochs_between_checkpoints is not None:
        callbacks.append(ShardCheckpointCallback(shard_steps, budget_args.num_epochs_between_checkpoints))
    return callbacks


def _record_then(
    recorder: ScheduleRecordCallback, on_snapshot: Callable[[Path, SnapshotInfo], None] | None
) -> Callable[[Path, SnapshotInfo], None]:
    def record_then(path: Path, info: SnapshotInfo) -> None:
        recorder.save_into_snapshot(path, info)
        if on_snapshot is not None:
            on_snapshot(path, info)

    return record_then


def build_trainer(
    model: PreTrainedModel,
    training_args: TrainingArguments,
    data: PretrainingData,
    data_args: DataArguments,
    tokenizer: PreTrainedTokenizerBase,
    clock: BudgetClock,
    callbacks: list[TrainerCallback],
) -> Trainer:
    """The stock Trainer with the BERT masking collator, the budget callbacks, and the budget progress bar."""
    collator = DataCollatorForBertPretraining(
        tokenizer=tokenizer,
        mlm_probability=data_args.mlm_probability,
        max_predictions_per_seq=data_args.max_predictions_per_seq,
        pad_to_multiple_of=8,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.validation,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    # The stock bar counts steps, which mean nothing when the budget ends training.
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(BudgetProgressCallback(clock))
    # The log printer (--disable_tqdm) and the --report_to integrations come first in the Trainer's list: moved
    # behind the budget bar, they receive the budget keys that it adds to every log.
    for log_consumer in (PrinterCallback, *get_reporting_integration_callbacks(training_args.report_to)):
        callback = trainer.pop_callback(log_consumer)
        if callback is not None:
            trainer.add_callback(callback)
        if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None and training_args.run_name:
            # One folder per --job_name rather than the default one per start: a resumed run continues its curves.
            callback.logging_dir = os.path.join(training_args.output_dir, "runs", training_args.run_name)
    compile_forward_under_deepspeed(trainer)
    return trainer


def compile_forward_under_deepspeed(trainer: Trainer) -> None:
    """With `--torch_compile` under DeepSpeed, compile the model's `forward` alone, in place of accelerate's
    `engine.compile()`.

    `engine.compile()` compiles the module's whole call, the hooks that DeepSpeed registers on it included, and on
    torch 2.11 with CUDA dynamo breaks the training step's graph seven times in them (a comparison of ZeRO stage
    enums, a CUDA synchronize of DeepSpeed's throughput timer). Compiled alone, `forward` is one graph and
    DeepSpeed's hooks run eagerly around it, as they do without compilation.
    """
    args = trainer.args
    if not (args.torch_compile and trainer.is_deepspeed_enabled):
        return
    model = trainer.model
    model.forward = torch.compile(model.forward, backend=args.torch_compile_backend, mode=args.torch_compile_mode)
    # Read by accelerate when it prepares the DeepSpeed engine: NO stops it from compiling the module again.
    trainer.accelerator.state.dynamo_plugin.backend = DynamoBackend.NO


def snapshot_pusher_hook(
    pusher: SnapshotPusher, trainer_state: Callable[[], TrainerState], world_size: int, command_line: list[str]
) -> Callable[[Path, SnapshotInfo], None]:
    """The `on_snapshot` hook that queues each finetuning snapshot, with its model card, for the Hub."""

    def push(path: Path, info: SnapshotInfo) -> None:
        card = ModelCardInfo.from_trainer_state(trainer_state(), info, world_size=world_size, command_line=command_line)
        pusher.submit(path, card_info=card)

    return push


@dataclass
class Pretraining:
    """
    A pretraining run ready to train: its arguments, the Trainer, the budget clock, the Hub pusher (if any), and the
    command that resumes it when it is preempted (by default its own `run_mlm.py` command line).
    """

    args: PretrainingArguments
    trainer: Trainer
    clock: BudgetClock
    pusher: SnapshotPusher | None
    resume_line: str | None = None

    def train(self) -> TrainOutput:
        """Train (resuming from the checkpoint chosen at parse time); a failed checkpoint save is one clear line."""
        try:
            return self.trainer.train(resume_from_checkpoint=self.args.training.resume_from_checkpoint)
        except SnapshotWriteError as error:  # a finetuning snapshot that did not fit: it names the intact checkpoint
            raise ExpectedError(str(error)) from error
        except Exception as error:
            # A checkpoint save that failed (a full disk, a lost permission): the previous checkpoint is intact.
            # CheckpointSaveError: it failed in another process, which told this one.
            saving = self.trainer.control.should_save or isinstance(error, CheckpointSaveError)
            output_dir, step = self.args.training.output_dir, self.trainer.state.global_step
            message = failed_save_message(output_dir, step, error) if saving else None
            if message is None:
                raise
            if not isinstance(error, CheckpointSaveError):
                # The other processes wait for this one's part of the checkpoint: they stop now, not at a timeout.
                callbacks = self.trainer.callback_handler.callbacks
                next(cb for cb in callbacks if isinstance(cb, CompleteCheckpointCallback)).report_failed_save()
            raise ExpectedError(message) from error

    def finish(self, result: TrainOutput) -> None:
        """
        Save the model, metrics and state of a finished run; a preempted one prints how to resume and exits with
        `EXIT_PREEMPTED`.
        """
        trainer = self.trainer
        if self.clock.interrupted:
            if trainer.is_world_process_zero():
                checkpoint = f"{self.args.training.output_dir}/{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}"
                resume = self.resume_line or resume_command("run_mlm.py", self.args.flags)
                message = preemption_message(trainer.state.global_step, checkpoint, self.clock, resume)
                print(message, flush=True)
                write_preemption_note(self.args.training.output_dir, message)
            raise SystemExit(EXIT_PREEMPTED)
        trainer.save_model()
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()

    def close(self) -> None:
        """Wait (a bounded time) for the snapshot uploads, then tear the process group down."""
        if self.pusher is not None:
            self.pusher.close(timeout=self.args.budget.push_timeout(self.clock.interrupted))
        # gloo otherwise aborts at interpreter exit now and then (see NOTES).
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def keep_cpu_memory_if_asked(args: PretrainingArguments) -> bool:
    """With `--reuse_cpu_memory` on a CPU run, keep freed memory in the process (`keep_freed_memory`); whether it
    applied."""
    if not (args.budget.reuse_cpu_memory and args.training.device.type == "cpu" and keep_freed_memory()):
        return False
    logger.info("Freed memory stays in the process for the next step (--reuse_cpu_memory).")
    return True


def build_pretraining(
    args: PretrainingArguments, clock: BudgetClock | None = None, resume_line: str | None = None
) -> Pretraining:
    """
    Load the tokenizer and the data, build the model, the budget callbacks and the Trainer. `clock` is the budget
    clock to run on (tests pass one on a manual time source); by default a real-time one of the parsed budget, or
    with `--replay_schedule_from` the one that replays the recorded schedule.

    `resume_line` is the command a preempted run prints to resume it (a cooldown's own command; by default
    `run_mlm.py`'s).

    Raises:
        UsageError: data that does not fit the flags (missing, empty, another vocabulary).
    """
    keep_cpu_memory_if_asked(args)
    try:
        tokenizer = load_pretraining_tokenizer(args)
        data = load_pretraining_data(args.data, tokenizer, args.training)
    except ValueError as error:
        raise UsageError(str(error)) from None
    model = build_model(args, tokenizer)
    shape_problem = checkpoint_shape_problem(args.training.resume_from_checkpoint, model, args.training.output_dir)
    if shape_problem is not None:
        raise UsageError(shape_problem)
    # Snapshots carry this tokenizer; run_glue.py clamps --max_seq_length to it, so it must not exceed the model.
    positions = getattr(model.config, "max_position_embeddings", tokenizer.model_max_length)
    tokenizer.model_max_length = min(tokenizer.model_max_length, positions)
    shard_steps = steps_per_shard(data.examples_per_shard, global_batch_size(args.training))
    logger.info(f"One shard (the seed's 'epoch') is {shard_steps} optimizer steps.")

    if clock is not None and clock.budget_seconds != args.budget.budget_seconds:
        raise ValueError(f"The clock's budget, {clock.budget_seconds} s, is not --total_training_time's.")
    if clock is None:
        clock = args.replay.clock() if args.replay else BudgetClock(args.budget.budget_seconds)
    recorder = ScheduleRecordCallback(
        clock, args.schedule(), args.conditions(), replay_of=args.replay.source if args.replay else None
    )
    pusher = None
    if args.hub_push is not None and args.training.process_index == 0:
        pusher = SnapshotPusher(args.hub_push.repo_id, token=args.hub_push.token, private=args.hub_push.private)
        if args.training.resume_from_checkpoint is not None:
            # What a preempted run could not push before it had to exit goes first.
            pusher.submit_unpushed(args.training.output_dir)
    trainer = None
    on_snapshot = None
    if pusher is not None:
        on_snapshot = snapshot_pusher_hook(pusher, lambda: trainer.state, args.training.world_size, sys.argv)
    callbacks = build_budget_callbacks(
        clock, args.budget, shard_steps, run_arguments=args.run_arguments(), on_snapshot=on_snapshot,
        save_total_limit=args.save_total_limit, recorder=recorder,
    )
    trainer = build_trainer(model, args.training, data, args.data, tokenizer, clock, callbacks)
    return Pretraining(args, trainer, clock, pusher, resume_line)
