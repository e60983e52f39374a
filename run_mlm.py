"""Pretrain a BudgetBert masked language model inside a wall-clock budget, on the stock transformers Trainer.

    python run_mlm.py --dataset_path data/prepared --output_dir out --total_training_time 24 ...
    torchrun --nproc_per_node 8 run_mlm.py ...
    deepspeed run_mlm.py --deepspeed ds_configs/zero1.json ...

Every flag of academic-budget-bert's run_pretraining.py is accepted with its meaning; `python run_mlm.py -h`.
"""

import logging
import sys

import datasets
import transformers
from transformers import set_seed
from transformers.utils import logging as hf_logging

from budget_bert.arguments import ArgumentError, parse_pretraining_args
from budget_bert.clock import BudgetClock
from budget_bert.hub.pusher import SnapshotPusher
from budget_bert.pretraining import (
    build_budget_callbacks,
    build_model,
    build_trainer,
    finish_distributed,
    global_batch_size,
    load_pretraining_data,
    load_tokenizer,
    run_arguments_record,
    snapshot_pusher_hook,
)
from budget_bert.data.loading import steps_per_shard

logger = hf_logging.get_logger("run_mlm")


def _setup_logging(training_args) -> None:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", handlers=[logging.StreamHandler(sys.stdout)])
    level = training_args.get_process_log_level()
    logger.setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    hf_logging.set_verbosity(level)
    hf_logging.enable_default_handler()
    hf_logging.enable_explicit_format()


def main(argv: list[str] | None = None) -> None:
    """Parse, build, train, save."""
    try:
        model_args, data_args, budget_args, training_args = parse_pretraining_args(argv)
    except ArgumentError as error:
        raise SystemExit(f"run_mlm.py: {error}") from None
    _setup_logging(training_args)
    logger.info(f"Training/evaluation parameters {training_args}")
    set_seed(training_args.seed)

    # The Trainer's own push would send output_dir to one branch on every save and pickle the token into each
    # checkpoint's training_args.bin: snapshots are pushed by the background pusher instead.
    pusher = SnapshotPusher.from_training_args(training_args)
    training_args.push_to_hub = False
    training_args.hub_token = None

    tokenizer = load_tokenizer(model_args, data_args)
    data = load_pretraining_data(data_args, tokenizer, training_args)
    model = build_model(model_args, tokenizer)
    shard_steps = steps_per_shard(data.examples_per_shard, global_batch_size(training_args))
    logger.info(f"One shard (the seed's 'epoch') is {shard_steps} optimizer steps.")

    clock = BudgetClock(budget_args.total_seconds)
    trainer = None
    on_snapshot = None
    if pusher is not None:
        on_snapshot = snapshot_pusher_hook(
            pusher, lambda: trainer.state, budget_args, training_args.world_size, sys.argv
        )
    callbacks = build_budget_callbacks(
        clock,
        budget_args,
        shard_steps,
        has_validation=data.validation is not None,
        run_arguments=run_arguments_record(model_args, data_args, budget_args),
        on_snapshot=on_snapshot,
    )
    trainer = build_trainer(model, training_args, data, data_args, tokenizer, clock, callbacks)
    try:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
    finally:
        if pusher is not None:
            pusher.close(timeout=budget_args.hub_push_timeout)
        finish_distributed()


if __name__ == "__main__":
    main()
