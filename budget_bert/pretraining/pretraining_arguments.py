"""Command-line arguments of `run_mlm.py`: HuggingFace dataclasses plus the seed project's flags.

Every flag of the academic-budget-bert example command is accepted with the seed's meaning. Where a seed flag
and a `TrainingArguments` flag mean the same thing (`--lr` / `--learning_rate`, ...), both spellings work, and
two that disagree are an error. The translation happens in one place, `parse_pretraining_args`, before anything
heavy starts; everything downstream sees canonical `TrainingArguments` plus `BudgetArguments`.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from transformers import HfArgumentParser, TrainingArguments

from budget_bert.data.data_arguments import TextDataArguments

# The largest step count the Trainer is given when the wall-clock budget, not a step count, ends training.
UNBOUNDED_MAX_STEPS = 10**12

_DS_CONFIG_FROM_FLAGS = "__from_flags__"


@dataclass
class ModelArguments:
    """Which model to pretrain: a fresh BudgetBert built from these sizes, or a checkpoint to continue from."""

    model_type: str = field(
        default="budget-bert",
        metadata={"help": "Model to pretrain. 'budget-bert' (our BERT variant); the seed's 'bert-mlm' is the same."},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Start from this checkpoint (local folder or Hub id) instead of a random init."},
    )
    tokenizer_name: str | None = field(
        default=None,
        metadata={"help": "Tokenizer: a Hub name (e.g. bert-large-uncased) or a local folder. Default: the one "
                  "recorded by prepare_data.py in --dataset_path, else --model_name_or_path."},
    )
    hidden_act: str = field(default="gelu", metadata={"help": "Activation of the feed-forward layers."})
    hidden_size: int = field(default=768, metadata={"help": "Width of the encoder."})
    num_hidden_layers: int = field(default=12, metadata={"help": "Number of encoder layers."})
    num_attention_heads: int = field(default=12, metadata={"help": "Attention heads per layer."})
    intermediate_size: int = field(default=3072, metadata={"help": "Width of the feed-forward layers."})
    hidden_dropout_prob: float = field(default=0.1, metadata={"help": "Dropout on hidden states."})
    attention_probs_dropout_prob: float = field(default=0.1, metadata={"help": "Dropout on attention weights."})
    encoder_ln_mode: str = field(
        default="pre-ln", metadata={"help": "Layer norm placement: 'pre-ln' (stable at high LR) or 'post-ln' (BERT)."}
    )
    layer_norm_type: str = field(default="layernorm", metadata={"help": "'layernorm' or 'rmsnorm'."})
    max_position_embeddings: int = field(default=512, metadata={"help": "Longest sequence the model accepts."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow code from --model_name_or_path / --tokenizer_name to run."}
    )

    def __post_init__(self):
        if self.model_type not in ("budget-bert", "bert-mlm"):
            raise ValueError(f"--model_type {self.model_type}: use 'budget-bert' (the seed's 'bert-mlm')")


@dataclass
class DataArguments(TextDataArguments):
    """Where the pretraining text comes from (prepared data, or raw text prepared on the fly) and how it is masked."""

    dataset_path: str | None = field(
        default=None, metadata={"help": "Folder written by prepare_data.py (packed, sharded, with validation)."}
    )
    num_shards: int = field(
        default=8,
        metadata={"help": "Shards of on-the-fly prepared data (--train_file/--dataset_name). One shard is the "
                  "seed's 'epoch' for --validation_epochs and --num_epochs_between_checkpoints."},
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens masked (dynamically)."})
    max_predictions_per_seq: int | None = field(
        default=None, metadata={"help": "At most this many masked tokens per sequence (seed flag)."}
    )
    data_loader_type: str = field(
        default="dist",
        metadata={"help": "Seed flag. 'dist': each process reads its own slice of every global batch (the "
                  "Trainer's distributed sampler); the only mode, kept for command compatibility."},
    )

    def problems(self) -> list[str]:
        """Every inconsistency, each naming its flag and the fix (empty when valid)."""
        problems = super().problems()
        if not (self.dataset_path or self.has_source):
            problems.append("no training data: give --dataset_path (from prepare_data.py), --train_file or "
                            "--dataset_name")
        elif self.dataset_path and self.has_source:
            problems.append("--dataset_path and --train_file/--dataset_name are two sources of training data: "
                            "give one")
        if self.num_shards < 1:
            problems.append(f"--num_shards must be >= 1, got {self.num_shards}")
        if self.data_loader_type != "dist":
            problems.append(f"--data_loader_type {self.data_loader_type}: only 'dist' exists (the Trainer's "
                            "distributed sampler)")
        if not 0 < self.mlm_probability < 1:
            problems.append(f"--mlm_probability must be in (0, 1), got {self.mlm_probability}")
        return problems


@dataclass
class BudgetArguments:
    """The wall-clock budget and everything that is scheduled by time rather than by steps."""

    total_training_time: float = field(default=24.0, metadata={"help": "Training budget in hours."})
    early_exit_time_marker: float | None = field(
        default=None, metadata={"help": "Stop after this many hours even if the budget is larger (LR curve and "
                                "markers still follow --total_training_time)."}
    )
    lr_schedule: str = field(
        default="time",
        metadata={"help": "'time': LR is a function of the elapsed share of the budget; 'step': the usual "
                  "--lr_scheduler_type schedules over --max_steps."},
    )
    curve: str = field(default="linear", metadata={"help": "Time-based LR decay after warmup: 'linear' or 'exp'."})
    decay_rate: float = field(
        default=0.99, metadata={"help": "--curve exp: the LR is multiplied by this every --decay_step hours."}
    )
    decay_step: float = field(
        default=1000.0,
        metadata={"help": "--curve exp: hours per --decay_rate factor (the seed's default, 1000, is practically "
                  "constant; e.g. --decay_rate 0.5 --decay_step 6 halves the LR every 6 hours)."},
    )
    warmup_proportion: float = field(default=0.06, metadata={"help": "Share of the budget spent warming up the LR."})
    do_validation: bool = field(default=False, metadata={"help": "Run validation during pretraining (seed flag)."})
    validation_epochs: int = field(default=3, metadata={"help": "Validate every this many shards."})
    validation_epochs_begin: int = field(default=1, metadata={"help": "... every this many at the start."})
    validation_epochs_end: int = field(default=1, metadata={"help": "... every this many at the end."})
    validation_begin_proportion: float = field(default=0.1, metadata={"help": "Share of the budget that is 'start'."})
    validation_end_proportion: float = field(default=0.1, metadata={"help": "Share of the budget that is 'end'."})
    use_early_stopping: bool = field(default=False, metadata={"help": "Stop a run whose eval loss is too high."})
    early_stop_time: float = field(default=180.0, metadata={"help": "Minutes into the budget of that check."})
    early_stop_eval_loss: float = field(default=6.0, metadata={"help": "Eval loss above which the run stops."})
    finetune_time_markers: str | None = field(
        default=None,
        metadata={"help": "Comma-separated shares of the budget (e.g. 0.5,0.9) at which a finetuning snapshot "
                  "is saved; one is always saved at the end."},
    )
    num_epochs_between_checkpoints: int | None = field(
        default=None, metadata={"help": "Save a training checkpoint (resumable) every this many shards."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start afresh, with the whole budget, even if --output_dir holds checkpoints of an earlier "
                  "run (transformers 4's flag): those checkpoints stop being resumable, and are overwritten as "
                  "this run reaches their steps. Without it, a run resumes from the newest complete checkpoint there."},
    )
    project_name: str | None = field(
        default=None, metadata={"help": "Project of the run for experiment trackers (sets WANDB_PROJECT)."}
    )
    hub_push_timeout: float = field(
        default=600.0,
        metadata={"help": "With --push_to_hub: seconds to wait at the end of training for snapshot uploads still "
                  "under way; what has not landed by then is listed with the command that pushes it later."},
    )
    hub_push_timeout_on_preemption: float = field(
        default=30.0,
        metadata={"help": "The same wait when a SIGTERM/SIGINT stopped the run: a scheduler's grace period is short "
                  "(SLURM's KillWait is 30 s by default), and the checkpoint comes first."},
    )

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        """Every inconsistency, each naming its flag and the fix (empty when valid)."""
        problems = []
        if self.total_training_time <= 0:
            problems.append(f"--total_training_time must be > 0 hours, got {self.total_training_time}")
        marker = self.early_exit_time_marker
        if marker is not None and marker <= 0:
            problems.append(f"--early_exit_time_marker must be > 0 hours, got {marker}")
        if marker is not None and marker > self.total_training_time:
            problems.append(
                f"--early_exit_time_marker {marker} is after the budget --total_training_time "
                f"{self.total_training_time}: make it smaller or drop it"
            )
        if self.lr_schedule not in ("time", "step"):
            problems.append(f"--lr_schedule {self.lr_schedule}: use 'time' or 'step'")
        if self.curve not in ("linear", "exp"):
            problems.append(f"--curve {self.curve}: use 'linear' or 'exp'")
        for name in ("hub_push_timeout", "hub_push_timeout_on_preemption"):
            if not getattr(self, name) >= 0:
                problems.append(f"--{name} must be >= 0 seconds, got {getattr(self, name)}")
        if not 0 < self.decay_rate <= 1:
            problems.append(f"--decay_rate must be in (0, 1], got {self.decay_rate}")
        if not self.decay_step > 0:
            problems.append(f"--decay_step must be > 0 hours, got {self.decay_step}")
        if not 0 <= self.warmup_proportion < 1:
            problems.append(f"--warmup_proportion must be in [0, 1), got {self.warmup_proportion}")
        if self.finetune_time_markers:
            try:
                markers = self.markers
            except ValueError:
                problems.append(
                    f"--finetune_time_markers {self.finetune_time_markers}: give comma-separated numbers, e.g. 0.5,0.9"
                )
            else:
                if any(not 0 < m <= 1 for m in markers):
                    problems.append(f"--finetune_time_markers {self.finetune_time_markers}: each marker must be in (0, 1]")
                if markers != sorted(set(markers)):
                    problems.append(
                        f"--finetune_time_markers {self.finetune_time_markers}: markers must be increasing, no repeats"
                    )
        for name in ("validation_epochs", "validation_epochs_begin", "validation_epochs_end"):
            if getattr(self, name) < 1:
                problems.append(f"--{name} must be >= 1 (shards between validations)")
        for name in ("validation_begin_proportion", "validation_end_proportion"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"--{name} must be in [0, 1]")
        if self.num_epochs_between_checkpoints is not None and self.num_epochs_between_checkpoints < 1:
            problems.append("--num_epochs_between_checkpoints must be >= 1")
        return problems

    @property
    def markers(self) -> list[float]:
        """`--finetune_time_markers` as floats."""
        if not self.finetune_time_markers:
            return []
        return [float(m) for m in self.finetune_time_markers.split(",") if m.strip()]

    @property
    def total_seconds(self) -> float:
        """The budget in seconds."""
        return self.total_training_time * 3600.0

    @property
    def stop_seconds(self) -> float:
        """When training stops: the budget, or the early exit marker when that comes first."""
        hours = self.total_training_time
        if self.early_exit_time_marker is not None:
            hours = min(hours, self.early_exit_time_marker)
        return hours * 3600.0


@dataclass
class SeedArguments:
    """Seed (academic-budget-bert) spellings of TrainingArguments flags. Each maps to one HF flag."""

    lr: float | None = field(default=None, metadata={"help": "Peak learning rate (= --learning_rate)."})
    train_batch_size: int | None = field(
        default=None,
        metadata={"help": "Global batch size; gradient accumulation = train_batch_size / (micro batch x processes)."},
    )
    train_micro_batch_size_per_gpu: int | None = field(
        default=None, metadata={"help": "Batch per process and step (= --per_device_train_batch_size)."}
    )
    gradient_clipping: float | None = field(
        default=None, metadata={"help": "Max gradient norm, 0 disables (= --max_grad_norm)."}
    )
    optimizer_type: str | None = field(default=None, metadata={"help": "'adamw' (= --optim adamw_torch)."})
    adam_eps: float | None = field(default=None, metadata={"help": "AdamW epsilon (= --adam_epsilon)."})
    print_steps: int | None = field(default=None, metadata={"help": "Log every this many steps (= --logging_steps)."})
    validation_micro_batch: int | None = field(
        default=None, metadata={"help": "Validation batch per process (= --per_device_eval_batch_size)."}
    )
    job_name: str | None = field(default=None, metadata={"help": "Name of the run (= --run_name)."})
    fp16_backend: str | None = field(
        default=None,
        metadata={"help": "'ds' (DeepSpeed's fp16, with --deepspeed) or 'amp' (torch autocast). Apex is gone from "
                  "transformers 5: 'apex' is refused with the replacement."},
    )
    fp16_opt: str | None = field(default=None, metadata={"help": "Apex optimisation level; see --fp16_backend."})
    zero_stage: int = field(
        default=0, metadata={"help": "ZeRO stage of the DeepSpeed config built when --deepspeed has no file."}
    )


# seed flag -> TrainingArguments field, for flags that are plain renames.
SEED_TO_HF = {
    "lr": "learning_rate",
    "train_micro_batch_size_per_gpu": "per_device_train_batch_size",
    "gradient_clipping": "max_grad_norm",
    "adam_eps": "adam_epsilon",
    "print_steps": "logging_steps",
    "validation_micro_batch": "per_device_eval_batch_size",
    "job_name": "run_name",
}
OPTIMIZERS = {"adamw": "adamw_torch", "adam": "adamw_torch"}
# TrainingArguments flags of the Trainer's own Hub push, which run_mlm.py switches off for its snapshot pusher.
_TRAINER_PUSH_FLAGS = {"hub_strategy", "hub_revision", "hub_always_push"}
ARGUMENT_CLASSES = (ModelArguments, DataArguments, BudgetArguments, SeedArguments, TrainingArguments)


class ArgumentError(ValueError):
    """Bad command-line flags; the message lists every problem, one line each, with the flag and the fix."""


def build_parser() -> HfArgumentParser:
    """The `run_mlm.py` parser: every dataclass above plus TrainingArguments, with help on every flag."""
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    parser.description = (
        "Pretrain a BudgetBert masked language model inside a wall-clock budget with the stock transformers "
        "Trainer. Seed (academic-budget-bert) flags and their TrainingArguments twins are both accepted."
    )
    return parser


def _given_flags(argv: list[str]) -> set[str]:
    """Names of the flags that appear on the command line (to tell an explicit value from a default)."""
    names = set()
    for token in argv:
        if token.startswith("--"):
            names.add(token[2:].split("=", 1)[0].replace("-", "_"))
    return names


def _expand_bare_deepspeed(argv: list[str]) -> list[str]:
    """The seed passes `--deepspeed` with no file: mark it so a config is built from the flags."""
    out = []
    for i, token in enumerate(argv):
        out.append(token)
        if token == "--deepspeed" and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            out.append(_DS_CONFIG_FROM_FLAGS)
    return out


def deepspeed_config_from_flags(zero_stage: int) -> dict[str, Any]:
    """A DeepSpeed config whose values the Trainer fills from its own flags ("auto").

    It names no optimizer and no scheduler, so the Trainer's AdamW and its (time-based) LR scheduler are used.
    `ds_configs/zero{0,1,2,3}.json` are this function's output.
    """
    config: dict[str, Any] = {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": {"stage": zero_stage},
        "fp16": {"enabled": "auto"},
        "bf16": {"enabled": "auto"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if zero_stage in (2, 3):
        config["zero_optimization"].update({"overlap_comm": True, "contiguous_gradients": True})
    if zero_stage == 3:
        config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    return config


def gradient_accumulation_steps(train_batch_size: int, micro_batch_size: int, world_size: int) -> int:
    """The accumulation that makes micro batch x processes x accumulation equal the seed's global batch."""
    per_step = micro_batch_size * world_size
    if train_batch_size % per_step:
        raise ArgumentError(
            f"--train_batch_size {train_batch_size} is not a multiple of micro batch {micro_batch_size} x "
            f"{world_size} processes: change one of them."
        )
    return train_batch_size // per_step


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _translate(values: dict[str, dict[str, Any]], given: set[str], problems: list[str]) -> None:
    """Fold seed flags into TrainingArguments values in place, recording every problem."""
    seed, hf, budget = values["SeedArguments"], values["TrainingArguments"], values["BudgetArguments"]
    for seed_name, hf_name in SEED_TO_HF.items():
        if seed[seed_name] is None:
            continue
        if hf_name in given and hf[hf_name] != seed[seed_name]:
            problems.append(
                f"--{seed_name} {seed[seed_name]} and --{hf_name} {hf[hf_name]} disagree: give one of them."
            )
        hf[hf_name] = seed[seed_name]

    if seed["optimizer_type"] is not None:
        optim = OPTIMIZERS.get(seed["optimizer_type"].lower())
        if optim is None:
            problems.append(f"--optimizer_type {seed['optimizer_type']} is not supported: use adamw "
                            "(or --optim with any optimizer transformers offers).")
        elif "optim" in given and hf["optim"] != optim:
            problems.append(f"--optimizer_type {seed['optimizer_type']} and --optim {hf['optim']} disagree.")
        else:
            hf["optim"] = optim

    if seed["train_batch_size"] is not None:
        try:
            accumulation = gradient_accumulation_steps(
                seed["train_batch_size"], hf["per_device_train_batch_size"], _world_size()
            )
        except ArgumentError as error:
            problems.append(str(error))
        else:
            if "gradient_accumulation_steps" in given and hf["gradient_accumulation_steps"] != accumulation:
                problems.append(
                    f"--train_batch_size {seed['train_batch_size']} implies --gradient_accumulation_steps "
                    f"{accumulation}, not {hf['gradient_accumulation_steps']}: give one of them."
                )
            hf["gradient_accumulation_steps"] = accumulation

    if seed["fp16_backend"] == "apex":
        problems.append("--fp16_backend apex: apex is not supported by transformers 5; use --fp16 "
                        "(torch autocast) or --deepspeed with --fp16.")
    elif seed["fp16_backend"] not in (None, "ds", "amp"):
        problems.append(f"--fp16_backend {seed['fp16_backend']}: use 'ds' or 'amp'.")
    if seed["fp16_opt"] is not None and seed["fp16_backend"] != "apex":
        problems.append("--fp16_opt only applies to apex, which transformers 5 no longer supports: drop it.")
    if seed["fp16_backend"] == "ds" and not hf.get("deepspeed"):
        problems.append("--fp16_backend ds needs --deepspeed.")

    if hf.get("deepspeed") == _DS_CONFIG_FROM_FLAGS:
        hf["deepspeed"] = deepspeed_config_from_flags(seed["zero_stage"])
    elif isinstance(hf.get("deepspeed"), str):
        _check_deepspeed_file(hf["deepspeed"], problems)

    if budget["do_validation"]:
        hf["do_eval"] = True
    if budget["lr_schedule"] == "time":
        if "max_steps" in given or "num_train_epochs" in given:
            problems.append("--lr_schedule time ends training by the budget: drop --max_steps/--num_train_epochs, "
                            "or use --lr_schedule step.")
        hf["max_steps"] = UNBOUNDED_MAX_STEPS
        hf["lr_scheduler_type"] = "constant"
    if "save_strategy" not in given:
        # Training checkpoints come from --num_epochs_between_checkpoints and the end of the budget.
        hf["save_strategy"] = "no"
    for flag in _TRAINER_PUSH_FLAGS.intersection(given):
        problems.append(f"--{flag} configures the Trainer's own push, which run_mlm.py replaces: each finetuning "
                        "snapshot goes to a branch of its own (see README, Publishing to the Hub); drop it")
    if "logging_nan_inf_filter" not in given:
        # The NaN/inf stop reads the logged loss, which this filter would replace with a finite mean.
        hf["logging_nan_inf_filter"] = False
    if "include_num_input_tokens_seen" not in given:
        hf["include_num_input_tokens_seen"] = "all"
    if "report_to" not in given:
        hf["report_to"] = "none"
    if not torch.cuda.is_available():
        # Without it the Trainer half-configures devices on a GPU-less host: DeepSpeed asserts on the batch size
        # and torchrun trains each rank alone (see the DeepSpeed notes in the README).
        hf["use_cpu"] = True
    if hf["use_cpu"] and hf["fp16"] and not hf.get("deepspeed"):
        # accelerate leaves fp16 autocast off on the CPU: the run would train in fp32 without a word.
        problems.append("--fp16 on the CPU needs --deepspeed (DeepSpeed's fp16 runs there, torch autocast does not): "
                        "add --deepspeed, use --bf16, or drop --fp16.")


def _check_deepspeed_file(path: str, problems: list[str]) -> None:
    try:
        json.loads(Path(path).read_text())
    except FileNotFoundError:
        problems.append(f"--deepspeed {path}: no such file; see ds_configs/ for ready configs.")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        problems.append(f"--deepspeed {path} is not valid JSON ({error}); fix the file or use one in ds_configs/.")


def parse_pretraining_args(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, BudgetArguments, TrainingArguments]:
    """Parse `run_mlm.py` flags (command line or one JSON file), fold seed flags in, and validate.

    Raises `ArgumentError` listing every problem at once, before any model or data is touched.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if len(argv) == 1 and argv[0].endswith(".json"):
        raw = json.loads(Path(argv[0]).read_text())
        argv = [token for key, value in raw.items() for token in _json_item_to_argv(key, value)]
    namespace, unknown = parser.parse_known_args(_expand_bare_deepspeed(argv))
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (see run_mlm.py -h)")
    given = _given_flags(argv)
    values = {
        cls.__name__: {f.name: getattr(namespace, f.name) for f in fields(cls) if f.init and hasattr(namespace, f.name)}
        for cls in ARGUMENT_CLASSES
    }
    problems: list[str] = []
    _translate(values, given, problems)
    parsed = {}
    for cls in (ModelArguments, DataArguments, BudgetArguments):
        try:
            parsed[cls] = cls(**values[cls.__name__])
        except ValueError as error:
            problems.extend(str(error).split("; "))
    if problems:
        raise ArgumentError("Invalid arguments:\n" + "\n".join(f"  - {p}" for p in problems))
    if parsed[BudgetArguments].project_name:
        os.environ.setdefault("WANDB_PROJECT", parsed[BudgetArguments].project_name)
    training_args = TrainingArguments(**values["TrainingArguments"])
    return parsed[ModelArguments], parsed[DataArguments], parsed[BudgetArguments], training_args


def _json_item_to_argv(key: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        return [f"--{key}"] if value else []
    if isinstance(value, list):
        return [f"--{key}", *map(str, value)]
    if isinstance(value, dict):
        return [f"--{key}", json.dumps(value)]
    return [f"--{key}", str(value)]
