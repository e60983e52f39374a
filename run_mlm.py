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
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging as hf_logging

from budget_bert.data.loading import steps_per_shard
from budget_bert.hub.pusher import SnapshotPusher
from budget_bert.pretraining.build import (
    build_budget_callbacks,
    build_model,
    build_trainer,
    finish_distributed,
    global_batch_size,
    load_pretraining_data,
    load_pretraining_tokenizer,
    run_arguments_record,
    snapshot_pusher_hook,
)
from budget_bert.pretraining.output_dir import check_output_dir, checkpoint_bytes
from budget_bert.pretraining.pretraining_arguments import ArgumentError, parse_pretraining_args
from budget_bert.pretraining.resume import EXIT_PREEMPTED, preemption_message, resume_command
from trainer_callbacks.checkpoints import failed_save_message, resolve_resume_checkpoint
from trainer_callbacks.clock import BudgetClock

logger = hf_logging.get_logger("run_mlm")


def _setup_logging(training_args) -> None:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", handlers=[logging.StreamHandler(sys.stdout)])
    level = training_args.get_process_log_level()
    logger.setLevel(level)
    # The project's own loggers are not under "transformers": without this, --log_level info hides their messages
    # (snapshots taken, pushed to the Hub).
    for package in ("budget_bert", "trainer_callbacks"):
        logging.getLogger(package).setLevel(level)
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
    # The Trainer's rotation would delete old checkpoints before the new one is marked complete; the
    # CompleteCheckpointCallback rotates after that.
    save_total_limit, training_args.save_total_limit = training_args.save_total_limit, None

    try:
        resume_from = resolve_resume_checkpoint(
            training_args.output_dir, training_args.resume_from_checkpoint, budget_args.overwrite_output_dir
        )
        # Missing, empty or mismatched data: one line naming the flag, before any training starts.
        tokenizer = load_pretraining_tokenizer(model_args, data_args)
        data = load_pretraining_data(data_args, tokenizer, training_args)
    except ValueError as error:
        raise SystemExit(f"run_mlm.py: {error}") from None
    model = build_model(model_args, tokenizer)
    # Snapshots carry this tokenizer; run_glue.py clamps --max_seq_length to it, so it must not exceed the model.
    tokenizer.model_max_length = min(tokenizer.model_max_length, model.config.max_position_embeddings)
    try:
        # Room for two checkpoints: the next one is written before the previous one may go.
        check_output_dir(training_args.output_dir, 2 * checkpoint_bytes(model))
    except ValueError as error:
        raise SystemExit(f"run_mlm.py: {error}") from None
    shard_steps = steps_per_shard(data.examples_per_shard, global_batch_size(training_args))
    logger.info(f"One shard (the seed's 'epoch') is {shard_steps} optimizer steps.")

    clock = BudgetClock(budget_args.total_seconds)
    trainer = None
    on_snapshot = None
    if pusher is not None:
        on_snapshot = snapshot_pusher_hook(pusher, lambda: trainer.state, training_args.world_size, sys.argv)
    callbacks = build_budget_callbacks(
        clock,
        budget_args,
        shard_steps,
        has_validation=data.validation is not None,
        run_arguments=run_arguments_record(model_args, data_args, budget_args),
        on_snapshot=on_snapshot,
        save_total_limit=save_total_limit,
    )
    trainer = build_trainer(model, training_args, data, data_args, tokenizer, clock, callbacks)
    try:
        result = trainer.train(resume_from_checkpoint=resume_from)
        if clock.interrupted:
            if trainer.is_world_process_zero():
                checkpoint = f"{training_args.output_dir}/{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}"
                command = resume_command("run_mlm.py", sys.argv[1:] if argv is None else argv)
                print(preemption_message(trainer.state.global_step, checkpoint, clock, command), flush=True)
            raise SystemExit(EXIT_PREEMPTED)
        trainer.save_model()
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
    except Exception as error:
        # A checkpoint save that failed (a full disk, a lost permission) gets one clear line; the previous
        # checkpoint is intact.
        saving = trainer.control.should_save
        message = failed_save_message(training_args.output_dir, trainer.state.global_step, error) if saving else None
        if message is None:
            raise
        raise SystemExit(f"run_mlm.py: {message}") from error
    finally:
        if pusher is not None:
            timeout = budget_args.hub_push_timeout_on_preemption if clock.interrupted else budget_args.hub_push_timeout
            pusher.close(timeout=timeout)
        finish_distributed()


if __name__ == "__main__":
    main()
