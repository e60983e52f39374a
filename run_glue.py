#!/usr/bin/env python
"""Finetune a snapshot on a GLUE task (or local csv/json data) with the stock `transformers.Trainer`.

HuggingFace run_glue's flags and behaviour, on transformers 5, for any Auto-class model and budget-bert
snapshots. The academic-budget-bert README's command runs as written (legacy `--evaluation_strategy` and
`--overwrite_output_dir` included):

    python run_glue.py --model_name_or_path <snapshot> --task_name MRPC --max_seq_length 128 \\
        --output_dir /tmp/finetuning --overwrite_output_dir --do_train --do_eval --evaluation_strategy steps \\
        --per_device_train_batch_size 32 --learning_rate 5e-5 --weight_decay 0.01 --eval_steps 50 \\
        --max_grad_norm 1.0 --num_train_epochs 5 --lr_scheduler_type polynomial --warmup_steps 50

Without Hub access, give the task's data as files: `--train_file`, `--validation_file` (MNLI also
`--validation_mismatched_file`), `--test_file`. Metrics are computed offline (`budget_bert.glue.metrics`); the
results go to the logs and to `<output_dir>/all_results.json`. `--early_stopping_patience N` stops on the
task's headline validation metric. `python run_glue.py -h` lists every flag; a single `.json` argument file works
too. A flag or file that does not fit is a one-line error (exit code 2).
"""

from transformers import Trainer, set_seed

from budget_bert.cli import run_cli, setup_logging, usage_error
from budget_bert.glue.glue_arguments import parse_args
from budget_bert.glue.glue_data import (
    check_columns,
    eval_splits,
    infer_labels,
    load_raw_datasets,
    test_splits,
    text_columns,
    tokenize,
)
from budget_bert.glue.metrics import build_compute_metrics, headline_metric, metric_names
from budget_bert.glue.model import labels_for_model, load_finetuning_tokenizer, load_model
from budget_bert.glue.runtime import (
    build_collator,
    early_stopping,
    evaluate_splits,
    find_resume_checkpoint,
    pick_splits,
    save_results,
    train,
    write_predictions,
)
from budget_bert.glue.tasks import get_task


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the finetuning described by `argv` (default: the command line); return the metrics it saved."""
    model_args, data_args, finetune_args, training_args = parse_args(argv)
    setup_logging(training_args.get_process_log_level())
    set_seed(training_args.seed)
    task = get_task(data_args.task_name) if data_args.task_name else None
    try:
        # Data, labels, tokenizer and model that do not fit the flags: one line naming the flag, before training.
        resume_from = find_resume_checkpoint(training_args, finetune_args.overwrite_output_dir)
        raw = load_raw_datasets(data_args, task, model_args.cache_dir)
        columns = text_columns(raw, task)
        check_columns(raw, columns, data_args, task)
        labels = labels_for_model(model_args, infer_labels(raw, task))
        headline = headline_metric(task, labels, training_args.metric_for_best_model)
        tokenizer = load_finetuning_tokenizer(model_args)
        model = load_model(model_args, labels)
    except ValueError as error:
        raise usage_error(error) from None
    with training_args.main_process_first(desc="tokenizing"):
        data = tokenize(raw, tokenizer, columns, labels, data_args)

    training_args, callbacks = early_stopping(training_args, finetune_args, headline)
    train_set = pick_splits(data, (("train", ""),), data_args.max_train_samples).get("")
    eval_sets = pick_splits(data, eval_splits(task), data_args.max_eval_samples)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_set if training_args.do_train else None,
        eval_dataset=eval_sets.get("") if training_args.do_eval else None,
        processing_class=tokenizer,
        data_collator=build_collator(tokenizer, data_args, training_args),
        compute_metrics=build_compute_metrics(metric_names(task, labels), labels.is_regression),
        callbacks=callbacks,
    )

    results = {}
    if training_args.do_train:
        results.update(train(trainer, train_set, resume_from))
    if training_args.do_eval:
        results.update(evaluate_splits(trainer, eval_sets))
    if training_args.do_predict:
        test_sets = pick_splits(data, test_splits(task), data_args.max_predict_samples)
        write_predictions(trainer, test_sets, labels, task.name if task else "test")
    save_results(trainer, results)
    return results


if __name__ == "__main__":
    run_cli("run_glue.py", main)
