"""The pieces `run_mlm.py` puts together: tokenizer, data, model, budget callbacks, and the stock Trainer."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
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
from transformers.utils import logging

from budget_bert import BudgetBertConfig, BudgetBertForMaskedLM
from budget_bert.data.collator import DataCollatorForBertPretraining
from budget_bert.data.loading import load_prepared_dataset, steps_per_shard
from budget_bert.data.metadata import TOKENIZER_DIR
from budget_bert.data.prepare import build_mlm_datasets
from budget_bert.data.tokenization import load_tokenizer
from budget_bert.hub.model_card import ModelCardInfo
from budget_bert.hub.pusher import SnapshotPusher
from budget_bert.hub.redaction import redact_secrets
from budget_bert.pretraining.pretraining_arguments import BudgetArguments, DataArguments, ModelArguments
from trainer_callbacks import (
    BudgetCallback,
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
from trainer_callbacks.clock import BudgetClock

logger = logging.get_logger(__name__)


@dataclass
class PretrainingData:
    """Training and validation examples, and how many optimizer steps one shard (the seed's "epoch") takes."""

    train: Dataset
    validation: Dataset | None
    examples_per_shard: int


def load_pretraining_tokenizer(model_args: ModelArguments, data_args: DataArguments) -> PreTrainedTokenizerBase:
    """`--tokenizer_name`, else the tokenizer saved with `--dataset_path`, else `--model_name_or_path`'s."""
    name, flag = model_args.tokenizer_name, "--tokenizer_name"
    if name is None and data_args.dataset_path:
        name, flag = os.path.join(data_args.dataset_path, TOKENIZER_DIR), "--dataset_path"
        if not os.path.isdir(name):
            raise ValueError(f"--dataset_path {data_args.dataset_path} is not data from prepare_data.py (no "
                             f"{TOKENIZER_DIR}/ folder): prepare it with prepare_data.py --output_dir "
                             f"{data_args.dataset_path}")
    if name is None:
        name, flag = model_args.model_name_or_path, "--model_name_or_path"
    if name is None:
        raise ValueError("No tokenizer: give --tokenizer_name (a Hub name or a folder) or --dataset_path from "
                         "prepare_data.py, which saves its tokenizer.")
    return load_tokenizer(name, flag, trust_remote_code=model_args.trust_remote_code)


def load_pretraining_data(
    data_args: DataArguments, tokenizer: PreTrainedTokenizerBase, training_args: TrainingArguments
) -> PretrainingData:
    """Prepared shards from `--dataset_path`, or raw text prepared on the fly (main process first, then cached)."""
    if data_args.dataset_path:
        train, validation, metadata = load_prepared_dataset(data_args.dataset_path)
        if metadata.vocab_size != len(tokenizer):
            raise ValueError(
                f"--dataset_path {data_args.dataset_path} was encoded with a {metadata.vocab_size}-token vocabulary "
                f"({metadata.tokenizer_name}), but the tokenizer has {len(tokenizer)}: drop --tokenizer_name to use "
                "the data's own tokenizer, or prepare the data again."
            )
        return PretrainingData(train, validation, metadata.examples_per_shard)
    with training_args.main_process_first(desc="preparing the pretraining data"):
        splits = build_mlm_datasets(data_args, tokenizer, training_args.seed)
    train = splits["train"]
    if len(train) < data_args.num_shards:
        raise ValueError(f"--num_shards {data_args.num_shards} exceeds the {len(train)} training examples.")
    return PretrainingData(train, splits.get("validation"), len(train) // data_args.num_shards)


def build_model(model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A fresh BudgetBert shaped by the flags, or the `--model_name_or_path` checkpoint to continue from."""
    if model_args.model_name_or_path:
        return AutoModelForMaskedLM.from_pretrained(
            model_args.model_name_or_path, trust_remote_code=model_args.trust_remote_code
        )
    config = BudgetBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=model_args.hidden_size,
        num_hidden_layers=model_args.num_hidden_layers,
        num_attention_heads=model_args.num_attention_heads,
        intermediate_size=model_args.intermediate_size,
        hidden_act=model_args.hidden_act,
        hidden_dropout_prob=model_args.hidden_dropout_prob,
        attention_probs_dropout_prob=model_args.attention_probs_dropout_prob,
        max_position_embeddings=model_args.max_position_embeddings,
        encoder_ln_mode=model_args.encoder_ln_mode,
        layer_norm_type=model_args.layer_norm_type,
        pad_token_id=tokenizer.pad_token_id,
    )
    return BudgetBertForMaskedLM(config)


def global_batch_size(training_args: TrainingArguments) -> int:
    """Examples per optimizer step over all processes."""
    return (
        training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * training_args.world_size
    )


def build_budget_callbacks(
    clock: BudgetClock,
    budget_args: BudgetArguments,
    shard_steps: int,
    has_validation: bool,
    run_arguments: dict,
    on_snapshot: Callable[[Path, SnapshotInfo], None] | None = None,
    save_total_limit: int | None = None,
) -> list[TrainerCallback]:
    """
    One callback per budget concern, all reading `clock`, and the crash-safety ones (clean stop on SIGTERM/SIGINT,
    complete checkpoints, rotation keeping at most `save_total_limit`). The progress bar is added by `build_trainer`.
    """
    callbacks: list[TrainerCallback] = [
        BudgetCallback(clock, stop_after_seconds=budget_args.stop_seconds),
        PreemptionCallback(clock),
        CompleteCheckpointCallback(save_total_limit),
        # Always on for its NaN/inf check; the eval-loss threshold only with --use_early_stopping.
        BudgetEarlyStoppingCallback(
            clock,
            early_stop_time=budget_args.early_stop_time,
            early_stop_eval_loss=budget_args.early_stop_eval_loss if budget_args.use_early_stopping else math.inf,
        ),
        FinetuneSnapshotCallback(
            clock, budget_args.markers, run_arguments=run_arguments, redact=redact_secrets, on_snapshot=on_snapshot
        ),
    ]
    if budget_args.lr_schedule == "time":
        callbacks.append(
            TimeBasedLRCallback(
                clock,
                budget_args.warmup_proportion,
                budget_args.curve,
                decay_rate=budget_args.decay_rate,
                decay_interval=budget_args.decay_step / budget_args.total_training_time,
            )
        )
    if budget_args.do_validation and has_validation:
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
    return trainer


def run_arguments_record(*arguments) -> dict:
    """The run's dataclasses as plain dicts, keyed by class name, for snapshots and reports."""
    return {type(a).__name__: dataclasses.asdict(a) for a in arguments}


def finish_distributed() -> None:
    """Tear the process group down: gloo otherwise aborts at interpreter exit now and then (see NOTES)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def snapshot_pusher_hook(
    pusher: SnapshotPusher, trainer_state: Callable[[], TrainerState], world_size: int, command_line: list[str]
) -> Callable[[Path, SnapshotInfo], None]:
    """The `on_snapshot` hook that queues each finetuning snapshot, with its model card, for the Hub."""

    def push(path: Path, info: SnapshotInfo) -> None:
        card = ModelCardInfo.from_trainer_state(trainer_state(), info, world_size=world_size, command_line=command_line)
        pusher.submit(path, card_info=card)

    return push
