"""The steps of run_glue.py around the Trainer: resuming, collating, early stopping, training,
evaluating, predicting, saving results.

`all_results.json` (train and evaluation metrics together) is written last, in one piece, so its presence
marks a finished run; the GLUE sweep relies on that to skip finished runs.
"""

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict
from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging as hf_logging

from budget_bert.glue.glue_arguments import DataArguments, FinetuneArguments, with_best_model_metric
from budget_bert.glue.glue_data import LabelSpec
from budget_bert.glue.tasks import LOWER_IS_BETTER

logger = hf_logging.get_logger(__name__)

RESULTS_FILE = "all_results.json"


def find_resume_checkpoint(training_args: TrainingArguments, overwrite_output_dir: bool) -> str | None:
    """The checkpoint to resume training from (HuggingFace run_glue's rules).

    `--resume_from_checkpoint` wins; else, unless `--overwrite_output_dir`, the last `checkpoint-N` in
    `--output_dir`. A non-empty `--output_dir` without checkpoints is a `ValueError`, so that a run never mixes
    its files with another's.
    """
    if training_args.resume_from_checkpoint is not None:
        return training_args.resume_from_checkpoint
    output_dir = training_args.output_dir
    if not training_args.do_train or overwrite_output_dir or not os.path.isdir(output_dir):
        return None
    last_checkpoint = get_last_checkpoint(output_dir)
    if last_checkpoint is None and os.listdir(output_dir):
        raise ValueError(
            f"--output_dir {output_dir} already exists and is not empty. Pass --overwrite_output_dir to train "
            "from scratch there, or choose another --output_dir."
        )
    if last_checkpoint is not None:
        logger.info(f"Resuming from {last_checkpoint}; pass --overwrite_output_dir to train from scratch.")
    return last_checkpoint


def pick_splits(data: DatasetDict, splits: tuple[tuple[str, str], ...], max_samples: int | None) -> dict[str, Dataset]:
    """The `(split, suffix)` splits present in `data`, keyed by suffix, each cut to `max_samples` examples."""
    picked = {}
    for split, suffix in splits:
        if split in data:
            dataset = data[split]
            picked[suffix] = dataset.select(range(min(len(dataset), max_samples))) if max_samples else dataset
    return picked


def build_collator(
    tokenizer: PreTrainedTokenizerBase, data_args: DataArguments, training_args: TrainingArguments
) -> Callable:
    """Stack pre-padded examples, or pad each batch to its longest example (`--no_pad_to_max_length`)."""
    if data_args.pad_to_max_length:
        return default_data_collator
    half = training_args.fp16 or training_args.bf16  # multiples of 8 keep half-precision matmuls tensor-core sized
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if half else None)


def early_stopping(
    training_args: TrainingArguments, finetune_args: FinetuneArguments, headline: str
) -> tuple[TrainingArguments, list[TrainerCallback]]:
    """Training arguments that track `headline` (unless `--metric_for_best_model` is set) and the stopping callback.

    Without `--early_stopping_patience`, the arguments unchanged and no callback.
    """
    if finetune_args.early_stopping_patience is None:
        return training_args, []
    training_args = with_best_model_metric(training_args, headline, greater_is_better=headline not in LOWER_IS_BETTER)
    callback = EarlyStoppingCallback(finetune_args.early_stopping_patience, finetune_args.early_stopping_threshold)
    return training_args, [callback]


def train(trainer: Trainer, train_set: Dataset, resume_from: str | None) -> dict[str, float]:
    """Train, save the model (with its tokenizer) and the trainer state; log and return the training metrics."""
    metrics = {**trainer.train(resume_from_checkpoint=resume_from).metrics, "train_samples": len(train_set)}
    trainer.save_model()
    trainer.save_state()
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics, combined=False)
    return metrics


def evaluate_splits(trainer: Trainer, eval_sets: dict[str, Dataset]) -> dict[str, float]:
    """Evaluate each validation set; metrics of the extra sets (MNLI mismatched) get their suffix (`_mm`)."""
    results = {}
    for suffix, dataset in eval_sets.items():
        metrics = {**trainer.evaluate(eval_dataset=dataset), "eval_samples": len(dataset)}
        metrics = {f"{key}{suffix}": value for key, value in metrics.items()}
        trainer.log_metrics("eval", metrics)
        results.update(metrics)
    trainer.save_metrics("eval", results, combined=False)
    return results


def write_predictions(trainer: Trainer, test_sets: dict[str, Dataset], labels: LabelSpec, name: str) -> None:
    """Write `predict_results_<name><suffix>.txt` (index, predicted label name or value) for each test set."""
    for suffix, dataset in test_sets.items():
        logits = trainer.predict(dataset, metric_key_prefix="predict").predictions
        if not trainer.is_world_process_zero():
            continue
        path = Path(trainer.args.output_dir, f"predict_results_{name}{suffix}.txt")
        with path.open("w") as file:
            file.write("index\tprediction\n")
            if labels.is_regression:
                file.writelines(f"{index}\t{value:.3f}\n" for index, value in enumerate(np.squeeze(logits, -1)))
            else:
                ids = np.argmax(logits, axis=-1)
                file.writelines(f"{index}\t{labels.names[label]}\n" for index, label in enumerate(ids))
        logger.info(f"Wrote {path}")


def save_results(trainer: Trainer, results: dict[str, float]) -> None:
    """Write `all_results.json`, the last file of a run, atomically: it exists complete or not at all."""
    if not trainer.is_world_process_zero():
        return
    path = Path(trainer.args.output_dir, RESULTS_FILE)
    partial = path.with_name(f".{RESULTS_FILE}.partial")
    partial.write_text(json.dumps(results, indent=4, sort_keys=True))
    os.replace(partial, path)
