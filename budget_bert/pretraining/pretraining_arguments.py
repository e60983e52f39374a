"""Command-line arguments of `run_mlm.py`, every one checked once, here, before anything heavy starts.

Every flag of the academic-budget-bert example command is accepted with the seed's meaning. Where a seed flag
and a `TrainingArguments` flag mean the same thing (`--lr` / `--learning_rate`, ...), both spellings work, and
two that disagree are an error. `parse_pretraining_args` translates them, settles the `TrainingArguments` that
run_mlm.py needs (its own Hub push and checkpoint rotation replace the Trainer's; the resume checkpoint is chosen),
reads the prepared data's metadata, builds the model's config (and the model on the meta device, to prove that it
builds and to size the checkpoints), and checks every flag and every combination: a flag that cannot act in the
combination given is an error naming both flags. Downstream sees one `PretrainingArguments`, whose budget is in
seconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from transformers import HfArgumentParser, PretrainedConfig, TrainingArguments
from transformers.utils import logging

from budget_bert.cli import (
    CheckedArguments,
    UsageError,
    given_flags,
    json_file_argv,
    raise_problems,
    setup_logging,
)
from budget_bert.data.data_arguments import TextDataArguments
from budget_bert.data.loading import load_prepared_metadata
from budget_bert.data.metadata import TOKENIZER_DIR, PreparedDataMetadata
from budget_bert.hub.redaction import redact_secrets
from budget_bert.pretraining.model_config import (
    BUDGET_BERT_SHAPE_FLAGS,
    BUDGET_BERT_TYPES,
    build_model_config,
    masked_lm_types,
    meta_model,
)
from budget_bert.pretraining.output_dir import check_output_dir, checkpoint_bytes
from budget_bert.pretraining.recipe import RECIPE, recipe_value
from budget_bert.pretraining.replay import (
    ReplaySchedule,
    data_conditions,
    load_replay_schedule,
    run_conditions,
    schedule_flags,
)
from trainer_callbacks.checkpoints import resolve_resume_checkpoint
from trainer_callbacks.lr_curves import COOLDOWN_SHAPES, CURVES, DEFAULT_COOLDOWN_PROPORTION, DEFAULT_COOLDOWN_SHAPE
from trainer_callbacks.snapshots import END_SNAPSHOT_NAME, snapshot_name


logger = logging.get_logger(__name__)

# The largest step count the Trainer is given when the wall-clock budget, not a step count, ends training.
UNBOUNDED_MAX_STEPS = 10**12
# A budget beyond a year is more likely a unit mistake (seconds or minutes given as hours) than a plan.
LONGEST_LIKELY_BUDGET_HOURS = 24 * 365

_DS_CONFIG_FROM_FLAGS = "__from_flags__"
COMMAND_LINE_RECORD = "command_line"
"""The key of the command line in `PretrainingArguments.run_arguments()` (and so in `run_arguments.json`)."""


@dataclass
class ModelArguments:
    """
    Which model to pretrain: a fresh BudgetBert shaped by these flags (the default), any masked LM that
    `AutoModelForMaskedLM` knows from `--config_name` or `--model_type`, or a checkpoint to continue from.
    """

    model_type: str = field(
        default="budget-bert",
        metadata={"help": "Model to pretrain from scratch: 'budget-bert' (our BERT variant, shaped by the flags "
                  "below; the seed's 'bert-mlm' is the same) or any masked-LM model type of transformers (bert, "
                  "modernbert, ...), from its default config and --config_overrides."},
    )
    config_name: str | None = field(
        default=None,
        metadata={"help": "A config file (config.json) or folder to pretrain from scratch: any masked LM that "
                  "AutoModelForMaskedLM knows, e.g. a ModernBERT or BERT config. The BudgetBert shape flags do not "
                  "apply to it (use --config_overrides)."},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Override config fields of a model trained from scratch, HuggingFace run_mlm.py's syntax: "
                  "'k=v,k=v', e.g. 'hidden_size=256,num_hidden_layers=4' (ModernBERT) or "
                  "'mlp_type=glu,position_embedding_type=rope' (BudgetBert)."},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Continue from this checkpoint (local folder or Hub id) instead of a random init."},
    )
    tokenizer_name: str | None = field(
        default=None,
        metadata={"help": "Tokenizer: a Hub name (e.g. bert-large-uncased) or a local folder. Default: the one "
                  "recorded by prepare_data.py in --dataset_path, else --model_name_or_path."},
    )
    hidden_act: str = field(default="gelu", metadata={"help": "BudgetBert: activation of the feed-forward layers."})
    hidden_size: int = field(default=768, metadata={"help": "BudgetBert: width of the encoder."})
    num_hidden_layers: int = field(default=12, metadata={"help": "BudgetBert: number of encoder layers."})
    num_attention_heads: int = field(default=12, metadata={"help": "BudgetBert: attention heads per layer."})
    intermediate_size: int | None = field(
        default=None,
        metadata={"help": "BudgetBert: width of the feed-forward layer; with --mlp_type glu, of each of its two "
                  "halves (so 2/3 of an ungated width has the same parameters). Default: 4 x --hidden_size for "
                  "'mlp', 2/3 of that (rounded up to a multiple of 8) for 'glu'."},
    )
    mlp_type: str = field(
        default=recipe_value("mlp_type"),
        metadata={"help": "BudgetBert: 'glu' (gated: GeGLU with --hidden_act gelu, SwiGLU with silu) or 'mlp' "
                  "(BERT's)."},
    )
    position_embedding_type: str = field(
        default=recipe_value("position_embedding_type"),
        metadata={"help": "BudgetBert: 'rope' (rotary, no position table) or 'absolute' (BERT's learned table)."},
    )
    linear_bias: bool = field(
        default=recipe_value("linear_bias"),
        metadata={"help": "BudgetBert: biases in the encoder's, MLM head's and pooler's linear layers (BERT: True)."},
    )
    norm_bias: bool = field(
        default=recipe_value("norm_bias"), metadata={"help": "BudgetBert: LayerNorm biases (BERT: True)."}
    )
    qk_norm: bool = field(
        default=recipe_value("qk_norm"),
        metadata={"help": "BudgetBert: RMSNorm of each head's queries and keys before attention."},
    )
    scale_residual_init: bool = field(
        default=recipe_value("scale_residual_init"),
        metadata={"help": "BudgetBert: initialise the attention and feed-forward output projections at "
                  "initializer_range / sqrt(2 x layers) (GPT-2, ModernBERT) instead of initializer_range (BERT)."},
    )
    scale_head_init: bool = field(
        default=recipe_value("scale_head_init"),
        metadata={"help": "BudgetBert: initialise the MLM head's dense layer at initializer_range / sqrt(2 x layers) "
                  "(ModernBERT) instead of initializer_range (BERT)."},
    )
    classifier_head: str = field(
        default=recipe_value("classifier_head"),
        metadata={"help": "BudgetBert: the sequence classifier's head when the model is finetuned: 'lm_head' (the "
                  "MLM head's dense + activation + norm, so finetuning starts from pretrained weights, as ModernBERT) "
                  "or 'pooler' (BERT's dense + tanh, which pretraining never trains)."},
    )
    classifier_pooling: str = field(
        default=recipe_value("classifier_pooling"),
        metadata={"help": "BudgetBert: what the sequence classifier reads: 'cls' (the first token, BERT's) or 'mean' "
                  "(the mean over the unpadded tokens)."},
    )
    hidden_dropout_prob: float = field(
        default=recipe_value("hidden_dropout_prob"), metadata={"help": "BudgetBert: dropout on hidden states."}
    )
    attention_probs_dropout_prob: float = field(
        default=recipe_value("attention_probs_dropout_prob"),
        metadata={"help": "BudgetBert: dropout on attention weights."},
    )
    encoder_ln_mode: str = field(
        default="pre-ln",
        metadata={"help": "BudgetBert: layer norm placement, 'pre-ln' (stable at high LR) or 'post-ln' (BERT)."},
    )
    layer_norm_type: str = field(default="layernorm", metadata={"help": "BudgetBert: 'layernorm' or 'rmsnorm'."})
    max_position_embeddings: int = field(
        default=512, metadata={"help": "BudgetBert: the longest sequence the model accepts."}
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Allow code from --model_name_or_path / --config_name / --tokenizer_name to run."},
    )

    def __post_init__(self):
        if self.model_type not in masked_lm_types():
            raise ValueError(
                f"--model_type {self.model_type} is not a masked LM: use {' or '.join(BUDGET_BERT_TYPES)} (BudgetBert) "
                "or a model type that AutoModelForMaskedLM knows (bert, modernbert, roberta, ...)"
            )

    @property
    def source_flag(self) -> str:
        """The flag that chose the model, for error messages."""
        if self.model_name_or_path:
            return f"--model_name_or_path {self.model_name_or_path}"
        if self.config_name:
            return f"--config_name {self.config_name}"
        return f"--model_type {self.model_type}"


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
    mlm_probability: float = field(
        default=recipe_value("mlm_probability"), metadata={"help": "Share of tokens masked (dynamically)."}
    )
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
        if not self.has_source and self.validation_proportion is not None:
            problems.append("--validation_proportion splits raw text prepared on the fly; --dataset_path was split "
                            "by prepare_data.py: drop it")
        if self.data_loader_type != "dist":
            problems.append(f"--data_loader_type {self.data_loader_type}: only 'dist' exists (the Trainer's "
                            "distributed sampler)")
        if not 0 < self.mlm_probability < 1:
            problems.append(f"--mlm_probability must be in (0, 1), got {self.mlm_probability}")
        return problems


@dataclass
class BudgetArguments(CheckedArguments):
    """
    The wall-clock budget and everything that is scheduled by time rather than by steps, in the seed's units (hours,
    minutes for `--early_stop_time`); the properties give them in seconds (and fractions), the one unit used
    downstream.
    """

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
    curve: str = field(
        default=recipe_value("curve"),
        metadata={"help": "Time-based LR curve after the warmup: 'linear' or 'exp' decay, or 'wsd' (warmup-stable-"
                  "decay): the peak LR until the last --cooldown_proportion of the budget, then a cooldown to 0. With "
                  "wsd, every --finetune_time_markers marker also keeps a training checkpoint "
                  "(marker_checkpoints/), which python -m budget_bert.cooldown turns into the model of a shorter "
                  "budget."},
    )
    decay_rate: float = field(
        default=0.99, metadata={"help": "--curve exp: the LR is multiplied by this every --decay_step hours."}
    )
    decay_step: float = field(
        default=1000.0,
        metadata={"help": "--curve exp: hours per --decay_rate factor (the seed's default, 1000, is practically "
                  "constant; e.g. --decay_rate 0.5 --decay_step 6 halves the LR every 6 hours)."},
    )
    warmup_proportion: float = field(
        default=recipe_value("warmup_proportion"), metadata={"help": "Share of the budget spent warming up the LR."}
    )
    cooldown_proportion: float = field(
        default=DEFAULT_COOLDOWN_PROPORTION,
        metadata={"help": "--curve wsd: share of the budget, at its end, over which the LR cools down to 0 (in Hägele "
                  "et al. 2024, a cooldown over a fifth of training matches a cosine schedule over all of it)."},
    )
    cooldown_shape: str = field(
        default=DEFAULT_COOLDOWN_SHAPE,
        metadata={"help": "--curve wsd: shape of the cooldown, 'linear', '1-sqrt' (1 - sqrt of the cooldown's "
                  "progress; better than linear in Hägele et al. 2024) or 'cosine'."},
    )
    do_validation: bool = field(default=False, metadata={"help": "Run validation during pretraining (seed flag)."})
    validation_epochs: int = field(default=3, metadata={"help": "Validate every this many shards."})
    validation_epochs_begin: int = field(default=1, metadata={"help": "... every this many at the start."})
    validation_epochs_end: int = field(default=1, metadata={"help": "... every this many at the end."})
    validation_begin_proportion: float = field(default=0.1, metadata={"help": "Share of the budget that is 'start'."})
    validation_end_proportion: float = field(default=0.1, metadata={"help": "Share of the budget that is 'end'."})
    use_early_stopping: bool = field(
        default=False, metadata={"help": "Stop a run whose eval loss is too high (needs --do_validation)."}
    )
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
    end_snapshot_name: str = field(
        default=END_SNAPSHOT_NAME,
        metadata={"help": "Name of the finetuning snapshot saved at the end of training: its folder under "
                  "finetune_snapshots/ and its Hub branch ('end' also goes to main). A cooldown names it "
                  "cooldown-budget-<B>h."},
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
    reuse_cpu_memory: bool = field(
        default=True,
        metadata={"help": "Training on the CPU (Linux, glibc): keep freed memory in the process for the next step "
                  "instead of returning each large block to the system, which makes every step fault in its large "
                  "tensors (the MLM logits and their gradients) page by page again: about 10%% of a 4 x 256 step. "
                  "The process keeps its peak memory until it exits. No effect on a GPU."},
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
    replay_schedule_from: str | None = field(
        default=None,
        metadata={"help": "Replay a recorded run step for step instead of measuring time: its --output_dir, a "
                  "snapshot folder, or a Hub repo with an optional @revision (e.g. me/bert-24h@end), holding "
                  "budget_schedule.json. Give the recorded run's flags: the learning rate, validations, markers and "
                  "the stop then come at its steps, whatever the speed of this hardware."},
    )

    def problems(self) -> list[str]:
        """Every inconsistency within these flags, each naming its flag and the fix (empty when valid)."""
        problems = []
        if not (math.isfinite(self.total_training_time) and self.total_training_time > 0):
            problems.append(f"--total_training_time must be a positive number of hours, got {self.total_training_time}")
        marker = self.early_exit_time_marker
        if marker is not None and not (math.isfinite(marker) and marker > 0):
            problems.append(f"--early_exit_time_marker must be a positive number of hours, got {marker}")
        elif marker is not None and marker > self.total_training_time:
            problems.append(
                f"--early_exit_time_marker {marker} is after the budget --total_training_time "
                f"{self.total_training_time}: make it smaller or drop it"
            )
        if self.lr_schedule not in ("time", "step"):
            problems.append(f"--lr_schedule {self.lr_schedule}: use 'time' or 'step'")
        if self.curve not in CURVES:
            problems.append(f"--curve {self.curve}: use {' or '.join(repr(curve) for curve in CURVES)}")
        for name in ("hub_push_timeout", "hub_push_timeout_on_preemption"):
            if not getattr(self, name) >= 0:
                problems.append(f"--{name} must be >= 0 seconds, got {getattr(self, name)}")
        if not 0 < self.decay_rate <= 1:
            problems.append(f"--decay_rate must be in (0, 1], got {self.decay_rate}")
        if not self.decay_step > 0:
            problems.append(f"--decay_step must be > 0 hours, got {self.decay_step}")
        if not 0 <= self.warmup_proportion < 1:
            problems.append(f"--warmup_proportion must be in [0, 1), got {self.warmup_proportion}")
        if not 0 < self.cooldown_proportion <= 1:
            problems.append(f"--cooldown_proportion must be in (0, 1], got {self.cooldown_proportion}")
        elif self.curve == "wsd" and self.warmup_proportion + self.cooldown_proportion > 1:
            problems.append(
                f"--warmup_proportion {self.warmup_proportion} and --cooldown_proportion {self.cooldown_proportion} "
                "add up to more than the budget: make them add up to at most 1"
            )
        if self.cooldown_shape not in COOLDOWN_SHAPES:
            problems.append(f"--cooldown_shape {self.cooldown_shape}: use {', '.join(map(repr, COOLDOWN_SHAPES))}")
        problems += self._end_snapshot_problems()
        if not self.early_stop_time >= 0:
            problems.append(f"--early_stop_time must be >= 0 minutes, got {self.early_stop_time}")
        problems += self._marker_problems()
        for name in ("validation_epochs", "validation_epochs_begin", "validation_epochs_end"):
            if getattr(self, name) < 1:
                problems.append(f"--{name} must be >= 1 (shards between validations), got {getattr(self, name)}")
        for name in ("validation_begin_proportion", "validation_end_proportion"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"--{name} must be in [0, 1], got {getattr(self, name)}")
        if self.num_epochs_between_checkpoints is not None and self.num_epochs_between_checkpoints < 1:
            problems.append(
                f"--num_epochs_between_checkpoints must be >= 1 shards, got {self.num_epochs_between_checkpoints}"
            )
        return problems

    def _end_snapshot_problems(self) -> list[str]:
        name = self.end_snapshot_name
        if not name or name.startswith(".") or Path(name).name != name:
            return [f"--end_snapshot_name {name!r}: give a folder name (not starting with a dot, no slashes)"]
        try:
            markers = self.markers
        except ValueError:
            return []  # reported by _marker_problems
        if name in map(snapshot_name, markers):
            return [f"--end_snapshot_name {name} is the name of a --finetune_time_markers snapshot: give another"]
        return []

    def _marker_problems(self) -> list[str]:
        if not self.finetune_time_markers:
            return []
        flag = f"--finetune_time_markers {self.finetune_time_markers}"
        try:
            markers = self.markers
        except ValueError:
            return [f"{flag}: give comma-separated numbers, e.g. 0.5,0.9"]
        problems = []
        if any(not 0 < m <= 1 for m in markers):
            problems.append(f"{flag}: each marker must be in (0, 1]")
        if markers != sorted(set(markers)):
            problems.append(f"{flag}: markers must be increasing, no repeats")
        elif len({snapshot_name(m) for m in markers}) != len(markers):
            problems.append(f"{flag}: two markers share a snapshot name ({', '.join(map(snapshot_name, markers))}): "
                            "give markers further apart")
        return problems

    def notices(self) -> list[str]:
        """Warnings about values that are valid but likely mistaken."""
        if self.total_training_time > LONGEST_LIKELY_BUDGET_HOURS:
            return [f"--total_training_time {self.total_training_time:g} hours is more than a year: the budget is in "
                    "hours (--total_training_time 0.5 is 30 minutes)"]
        return []

    @property
    def markers(self) -> list[float]:
        """`--finetune_time_markers` as floats."""
        if not self.finetune_time_markers:
            return []
        return [float(m) for m in self.finetune_time_markers.split(",") if m.strip()]

    @property
    def budget_seconds(self) -> float:
        """The budget (`--total_training_time`), in seconds."""
        return self.total_training_time * 3600.0

    @property
    def stop_seconds(self) -> float:
        """When training stops: the budget, or the early exit marker when that comes first, in seconds."""
        hours = self.total_training_time
        if self.early_exit_time_marker is not None:
            hours = min(hours, self.early_exit_time_marker)
        return hours * 3600.0

    @property
    def early_stop_seconds(self) -> float:
        """`--early_stop_time`, in seconds of budget."""
        return self.early_stop_time * 60.0

    @property
    def decay_interval(self) -> float:
        """`--decay_step`, as a fraction of the budget (the exp curve's interval between `--decay_rate` factors)."""
        return self.decay_step / self.total_training_time

    def push_timeout(self, interrupted: bool) -> float:
        """Seconds to wait for the Hub uploads at the end: shorter when a signal stopped the run."""
        return self.hub_push_timeout_on_preemption if interrupted else self.hub_push_timeout


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
        raise UsageError(
            f"--train_batch_size {train_batch_size} is not a multiple of micro batch {micro_batch_size} x "
            f"{world_size} processes: change one of them"
        )
    return train_batch_size // per_step


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _translate(values: dict[str, dict[str, Any]], given: set[str], problems: list[str]) -> None:
    """Fold seed flags into TrainingArguments values, and settle the values run_mlm.py needs, recording problems."""
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
        except UsageError as error:
            problems.extend(error.problems)
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
    else:
        if "zero_stage" in given:
            problems.append("--zero_stage sets the stage of the DeepSpeed config built for a bare --deepspeed: give "
                            "--deepspeed without a file, or set the stage in the file")
        if isinstance(hf.get("deepspeed"), str):
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
    elif hf["use_cpu"] and hf["fp16"] and not deepspeed_cpu_fp16():
        problems.append("--fp16 with --deepspeed on this CPU: DeepSpeed's CPU fp16 needs oneDNN fp16 (AVX512-FP16 "
                        "or AMX-FP16), which this CPU lacks; use --bf16 or drop --fp16.")


def _check_deepspeed_file(path: str, problems: list[str]) -> None:
    try:
        json.loads(Path(path).read_text())
    except FileNotFoundError:
        problems.append(f"--deepspeed {path}: no such file; see ds_configs/ for ready configs.")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        problems.append(f"--deepspeed {path} is not valid JSON ({error}); fix the file or use one in ds_configs/.")


@dataclass(frozen=True)
class HubPushSettings:
    """Where `--push_to_hub` sends the snapshots (`--hub_model_id`, else the name of `--output_dir`), and how."""

    repo_id: str
    token: str | None
    private: bool | None


@dataclass
class PretrainingArguments:
    """
    Everything `run_mlm.py` was asked to do, checked. `training` is settled: the Trainer's own Hub push and
    checkpoint rotation are off (`hub_push` and `save_total_limit` hold them for run_mlm.py's own),
    `resume_from_checkpoint` is the checkpoint to resume from (or `None`), and the seed flags are folded in.
    `model_config` is the model's config before the tokenizer's vocabulary and special tokens are applied; `flags`
    the command line's flags (those of a JSON argument file written out).
    """

    model: ModelArguments
    data: DataArguments
    budget: BudgetArguments
    training: TrainingArguments
    model_config: PretrainedConfig
    metadata: PreparedDataMetadata | None
    hub_push: HubPushSettings | None
    save_total_limit: int | None
    flags: list[str]
    replay: ReplaySchedule | None = None

    def run_arguments(self) -> dict[str, Any]:
        """
        The run's own dataclasses as plain dicts, keyed by class name, and its command line (`run_mlm.py` and its
        flags, secrets redacted: what a cooldown replays), for snapshots, marker checkpoints and reports.
        """
        arguments: dict[str, Any] = {
            type(a).__name__: dataclasses.asdict(a) for a in (self.model, self.data, self.budget)
        }
        arguments[COMMAND_LINE_RECORD] = redact_secrets(["run_mlm.py", *self.flags])
        return arguments

    def schedule(self) -> dict[str, Any]:
        """The flags that shape the run's schedule: recorded with it, and compared by a replay."""
        return schedule_flags(self.budget, self.training.learning_rate)

    def conditions(self) -> dict[str, Any]:
        """What one optimizer step means (global batch, its split, the data): recorded, and compared by a replay."""
        training = self.training
        return run_conditions(
            global_batch_size(training), training.world_size, training.per_device_train_batch_size,
            training.gradient_accumulation_steps, data_conditions(self.metadata, self.data),
        )


def global_batch_size(training_args: TrainingArguments) -> int:
    """Examples per optimizer step over all processes."""
    return (
        training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * training_args.world_size
    )


def build_parser() -> HfArgumentParser:
    """The `run_mlm.py` parser: every dataclass above plus TrainingArguments, with help on every flag."""
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    # The recipe's TrainingArguments defaults (the LR, the optimizer's settings) replace transformers' own; the
    # recipe's other defaults are the dataclass fields' own.
    training_fields = {f.name for f in fields(TrainingArguments)}
    parser.set_defaults(**{flag: item.value for flag, item in RECIPE.items() if flag in training_fields})
    parser.prog = "run_mlm.py"
    parser.description = (
        "Pretrain a masked language model (BudgetBert, or any masked LM that AutoModelForMaskedLM knows) inside a "
        "wall-clock budget with the stock transformers Trainer. Seed (academic-budget-bert) flags and their "
        "TrainingArguments twins are both accepted; a single .json file of flags works too."
    )
    return parser


def parse_pretraining_args(argv: list[str] | None = None) -> PretrainingArguments:
    """
    Parse `run_mlm.py`'s flags (the command line, or one JSON file of them), fold the seed flags in, check every
    flag and combination, and settle what run_mlm.py runs on. Sets up logging at `--log_level` on the way.

    Raises:
        UsageError: listing every problem at once, each naming its flag(s) and the fix, before any model or data is
            touched.
    """
    argv = json_file_argv(argv)
    parser = build_parser()
    namespace, unknown = parser.parse_known_args(_expand_bare_deepspeed(argv))
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (see run_mlm.py -h)")
    given = given_flags(argv)
    values = {
        cls.__name__: {f.name: getattr(namespace, f.name) for f in fields(cls) if f.init and hasattr(namespace, f.name)}
        for cls in ARGUMENT_CLASSES
    }
    problems: list[str] = []
    _translate(values, given, problems)
    hub_push, save_total_limit = _take_over_hub_push_and_rotation(values["TrainingArguments"])
    parsed = {}
    for cls in (ModelArguments, DataArguments, BudgetArguments):
        try:
            parsed[cls] = cls(**values[cls.__name__])
        except ValueError as error:
            problems.extend(str(error).split("; "))
    raise_problems(problems)
    model_args, data_args, budget_args = parsed[ModelArguments], parsed[DataArguments], parsed[BudgetArguments]
    try:
        training_args = TrainingArguments(**values["TrainingArguments"])
    except ValueError as error:
        raise UsageError(str(error)) from None
    setup_logging(training_args.get_process_log_level())
    for notice in budget_args.notices():
        logger.warning(notice)

    raise_problems(_combination_problems(model_args, data_args, budget_args, training_args, given, hub_push))
    metadata = _prepared_metadata(data_args, model_args, budget_args)
    model_config = build_model_config(
        model_args.model_type, model_args.config_name, model_args.config_overrides, model_args.model_name_or_path,
        shape={name: getattr(model_args, name) for name in BUDGET_BERT_SHAPE_FLAGS}, given=given,
        trust_remote_code=model_args.trust_remote_code,
    )
    _check_sequence_length(model_config, metadata, model_args)
    model = meta_model(model_config, model_args.source_flag, model_args.trust_remote_code)
    try:
        # Room for two checkpoints: the next one is written before the previous one may go.
        check_output_dir(training_args.output_dir, 2 * checkpoint_bytes(model))
        resume_from = resolve_resume_checkpoint(
            training_args.output_dir, training_args.resume_from_checkpoint, budget_args.overwrite_output_dir
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    if budget_args.project_name:
        os.environ.setdefault("WANDB_PROJECT", budget_args.project_name)
    args = PretrainingArguments(
        model=model_args,
        data=data_args,
        budget=budget_args,
        training=dataclasses.replace(training_args, resume_from_checkpoint=resume_from),
        model_config=model_config,
        metadata=metadata,
        hub_push=hub_push,
        save_total_limit=save_total_limit,
        flags=argv,
    )
    args.replay = load_replay_schedule(args)
    return args


def _take_over_hub_push_and_rotation(hf: dict[str, Any]) -> tuple[HubPushSettings | None, int | None]:
    """
    Take the Hub push and the checkpoint rotation out of the TrainingArguments values: the Trainer's push would
    send `output_dir` to one branch on every save and pickle the token into every checkpoint's `training_args.bin`
    (the snapshot pusher pushes instead), and its rotation would delete old checkpoints before the new one is
    marked complete (the `CompleteCheckpointCallback` rotates after that).
    """
    hub_push = None
    if hf["push_to_hub"]:
        repo_id = hf["hub_model_id"] or Path(hf["output_dir"]).absolute().name
        hub_push = HubPushSettings(repo_id, hf["hub_token"], hf["hub_private_repo"])
    save_total_limit = hf["save_total_limit"]
    hf.update(push_to_hub=False, hub_token=None, save_total_limit=None)
    return hub_push, save_total_limit


def _is_within(path: str, folder: str) -> bool:
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def _combination_problems(
    model_args: ModelArguments, data_args: DataArguments, budget_args: BudgetArguments,
    training_args: TrainingArguments, given: set[str], hub_push: HubPushSettings | None,
) -> list[str]:
    """Every flag that cannot act in the combination given, as an error naming both flags."""
    problems = []

    def cannot_act(flags: tuple[str, ...], reason: str) -> None:
        problems.extend(f"--{flag} {reason}" for flag in flags if flag in given)

    if data_args.dataset_path and _is_within(training_args.output_dir, data_args.dataset_path):
        problems.append(f"--output_dir {training_args.output_dir} is inside --dataset_path {data_args.dataset_path}: "
                        "preparing that data again would delete the run's checkpoints and snapshots; pick an "
                        "--output_dir outside it")
    if budget_args.use_early_stopping and not budget_args.do_validation:
        problems.append("--use_early_stopping stops on the validation loss: add --do_validation, or drop "
                        "--use_early_stopping")
    if not budget_args.use_early_stopping:
        cannot_act(("early_stop_time", "early_stop_eval_loss"), "only applies with --use_early_stopping: add it, or "
                   "drop the flag")
    if not budget_args.do_validation:
        cannot_act(("validation_epochs", "validation_epochs_begin", "validation_epochs_end",
                    "validation_begin_proportion", "validation_end_proportion"),
                   "schedules validation, which runs only with --do_validation: add it, or drop the flag")
    if budget_args.lr_schedule == "step":
        cannot_act(("curve", "warmup_proportion", "decay_rate", "decay_step", "cooldown_proportion", "cooldown_shape"),
                   "shapes the time-based learning rate, and --lr_schedule step uses --lr_scheduler_type: drop one")
    else:
        if budget_args.curve != "exp":
            cannot_act(("decay_rate", "decay_step"),
                       f"applies to --curve exp, not --curve {budget_args.curve}: drop one")
        if budget_args.curve != "wsd":
            cannot_act(("cooldown_proportion", "cooldown_shape"),
                       f"applies to --curve wsd, not --curve {budget_args.curve}: drop one")
    if budget_args.lr_schedule == "time" and training_args.warmup_steps:
        problems.append("--warmup_steps is ignored by --lr_schedule time: use --warmup_proportion")
    if hub_push is None:
        cannot_act(("hub_push_timeout", "hub_push_timeout_on_preemption", "hub_model_id", "hub_private_repo"),
                   "only applies with --push_to_hub: add it, or drop the flag")
    if data_args.dataset_path:
        cannot_act(("num_shards",), "applies to raw text prepared on the fly; --dataset_path has the shards "
                   "prepare_data.py wrote: drop one")
    if budget_args.overwrite_output_dir and training_args.resume_from_checkpoint is not None:
        problems.append(f"--overwrite_output_dir starts afresh and --resume_from_checkpoint "
                        f"{training_args.resume_from_checkpoint} resumes: give one")
    if model_args.tokenizer_name is None and not data_args.dataset_path and not model_args.model_name_or_path:
        problems.append("No tokenizer: give --tokenizer_name (a Hub name or a folder), or --dataset_path from "
                        "prepare_data.py, which saves its tokenizer")
    no_split = data_args.has_source and data_args.validation_proportion == 0 and not data_args.validation_file
    if budget_args.do_validation and no_split and not data_args.dataset_name:
        problems.append("--do_validation with --validation_proportion 0 and no --validation_file: there is no "
                        "validation data; give a validation proportion or file, or drop --do_validation")
    return problems


def _prepared_metadata(
    data_args: DataArguments, model_args: ModelArguments, budget_args: BudgetArguments
) -> PreparedDataMetadata | None:
    """The metadata of `--dataset_path` (a small JSON file), checked against the flags that depend on it."""
    if not data_args.dataset_path:
        return None
    try:
        metadata = load_prepared_metadata(data_args.dataset_path)
    except ValueError as error:
        raise UsageError(str(error)) from None
    problems = []
    if model_args.tokenizer_name is None and not os.path.isdir(os.path.join(data_args.dataset_path, TOKENIZER_DIR)):
        problems.append(f"--dataset_path {data_args.dataset_path} has no {TOKENIZER_DIR}/ folder to take the "
                        "tokenizer from: give --tokenizer_name, or prepare the data again with prepare_data.py")
    if budget_args.do_validation and metadata.validation_examples == 0:
        problems.append(f"--do_validation: --dataset_path {data_args.dataset_path} has no validation split "
                        "(prepared with --validation_proportion 0): prepare it with one, or drop --do_validation")
    raise_problems(problems)
    return metadata


def _check_sequence_length(
    config: PretrainedConfig, metadata: PreparedDataMetadata | None, model_args: ModelArguments
) -> None:
    positions = getattr(config, "max_position_embeddings", None)
    if metadata is not None and positions is not None and metadata.max_seq_length > positions:
        fresh = model_args.source_flag.startswith("--model_type")
        flag = "--max_position_embeddings" if fresh else model_args.source_flag
        raise UsageError(f"{flag} allows {positions} positions and the --dataset_path examples have "
                         f"{metadata.max_seq_length} tokens: allow more positions, or prepare shorter examples")


def deepspeed_cpu_fp16() -> bool:
    """Whether DeepSpeed's CPU accelerator runs fp16 on this machine (it needs oneDNN's fp16 kernels)."""
    from deepspeed.accelerator import get_accelerator  # deferred: DeepSpeed takes seconds to import

    return bool(get_accelerator().is_fp16_supported())
