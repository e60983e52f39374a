"""Pretrain a masked language model inside a wall-clock budget, on the stock transformers Trainer.

    python run_mlm.py --dataset_path data/prepared --output_dir out --total_training_time 24 ...
    python run_mlm.py --config_name modernbert-config.json --config_overrides num_hidden_layers=4 ...
    torchrun --nproc_per_node 8 run_mlm.py ...
    deepspeed run_mlm.py --deepspeed ds_configs/zero1.json ...

Every flag of academic-budget-bert's run_pretraining.py is accepted with its meaning, and HuggingFace run_mlm.py's
`--model_type`, `--config_name` and `--config_overrides` train any masked LM that AutoModelForMaskedLM knows under the
same budget; `python run_mlm.py -h`, or `python run_mlm.py args.json`.
"""

from transformers import set_seed
from transformers.utils import logging

from budget_bert.cli import run_cli
from budget_bert.pretraining.build import build_pretraining
from budget_bert.pretraining.pretraining_arguments import parse_pretraining_args
from budget_bert.pretraining.resume import announce_start, preempted_before_training, resume_command
from trainer_callbacks import BudgetClock


logger = logging.get_logger("run_mlm")


def main(argv: list[str] | None = None, clock: BudgetClock | None = None) -> None:
    """
    Parse, build, train, finish. `clock` is the budget clock to run on (tests pass one on a manual time source);
    by default a real-time one of `--total_training_time`.
    """
    args = parse_pretraining_args(argv)  # every flag checked, TrainingArguments settled, logging set up
    if not announce_start(args):
        return  # the command of a finished run, run again: nothing to do
    logger.info(f"Training/evaluation parameters {args.training}")
    set_seed(args.training.seed)
    pretraining = None
    try:
        # A signal before the Trainer's own handling takes over exits 75 too (nothing to save yet).
        command, main_process = resume_command("run_mlm.py", args.flags), args.training.process_index == 0
        with preempted_before_training(command, args.training.output_dir, main_process):
            pretraining = build_pretraining(args, clock)
            result = pretraining.train()
        pretraining.finish(result)
    finally:
        if pretraining is not None:
            pretraining.close()


if __name__ == "__main__":
    run_cli("run_mlm.py", main)
