"""The peers of bench/quality_per_hour.py: stock BERT and transformers' ModernBERT, each trained by the stock Trainer.

Each peer is built from its transformers config at the compared shape and trained with its own published recipe
(`PeerRecipe`): what a careful user of transformers would run. Its schedule runs either by steps (`max_steps` from a
throughput probe, and a time cap at the budget: the stock Trainer's own schedulers) or by time (`time_schedule`:
the recipe's curve over the wall-clock budget, with budget-bert's callbacks, so that a machine slower than the
probe cannot cut the decay short).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForMaskedLM,
    BertConfig,
    DataCollatorForLanguageModeling,
    ModernBertConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerState,
    TrainingArguments,
    set_seed,
)

from trainer_callbacks import BudgetCallback, BudgetClock, TimeBasedLRCallback


@dataclass(frozen=True)
class ModelShape:
    """The shape every compared model shares.

    `intermediate_size` is BERT's feed-forward width (default 4 x hidden); ModernBERT's gated MLP gets 2/3 of it
    (`modernbert_intermediate_size`), so that both MLPs have the same parameter count.
    """

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int | None
    max_seq_length: int

    @property
    def bert_intermediate_size(self) -> int:
        """BERT's feed-forward width: `intermediate_size`, or 4 x `hidden_size`."""
        return self.intermediate_size or 4 * self.hidden_size

    @property
    def modernbert_intermediate_size(self) -> int:
        """ModernBERT's GeGLU width: `Wi` (H -> 2I) and `Wo` (I -> H) hold 3HI weights, BERT's two layers 2HF."""
        return round(2 * self.bert_intermediate_size / 3)


@dataclass(frozen=True)
class PeerRecipe:
    """A published pretraining recipe, in the terms of the stock Trainer and its MLM collator.

    Args:
        name: the model's name in the benchmark (`--models`).
        mlm_probability: share of the tokens masked in training (the evaluation masks are always 15%).
        adam_beta1, adam_beta2, adam_epsilon, weight_decay: AdamW's settings.
        lr_scheduler_type: the Trainer's schedule over `max_steps`.
        time_curve: the same schedule over the wall-clock budget (a curve of `trainer_callbacks.lr_curves`).
        decay_type: for `warmup_stable_decay`, the shape of the decay (by steps and by time).
        source: where the recipe is published.
    """

    name: str
    mlm_probability: float
    adam_beta1: float
    adam_beta2: float
    adam_epsilon: float
    weight_decay: float
    lr_scheduler_type: str
    time_curve: str
    source: str
    decay_type: str | None = None


# BERT (Devlin et al. 2019, its optimization.py): AdamW 0.9/0.999, eps 1e-6, weight decay 0.01, warmup then linear
# decay, 15% masking, dropout 0.1 (BertConfig's default).
BERT_RECIPE = PeerRecipe(
    name="bert", mlm_probability=0.15, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-6, weight_decay=0.01,
    lr_scheduler_type="linear", time_curve="linear", source="Devlin et al. 2019 (BERT)",
)
# ModernBERT (Warner et al. 2024): StableAdamW (AdamW here: the stock Trainer has no StableAdamW) 0.9/0.98,
# eps 1e-6, weight decay 1e-5, 30% masking, no dropout (ModernBertConfig's default), warmup-stable-decay with a 1-sqrt
# decay; the decay's share of a short run is `--modernbert_decay_proportion`.
MODERNBERT_RECIPE = PeerRecipe(
    name="modernbert", mlm_probability=0.3, adam_beta1=0.9, adam_beta2=0.98, adam_epsilon=1e-6, weight_decay=1e-5,
    lr_scheduler_type="warmup_stable_decay", time_curve="wsd", decay_type="1-sqrt",
    source="Warner et al. 2024 (ModernBERT)",
)
PEER_RECIPES = {recipe.name: recipe for recipe in (BERT_RECIPE, MODERNBERT_RECIPE)}
# max_steps of a run that a callback ends (the probe's StepTimes, or the budget under `time_schedule`).
NO_STEP_LIMIT = 10**9


class StepTimes(TrainerCallback):
    """Records when each optimizer step ends and stops training past `stop_after` seconds from train begin.

    The probe uses it to measure steps per second (and goes on to `min_steps` steps however slow they are); the
    peers use it as their time cap (`stopped` says whether it acted before `max_steps`).
    """

    def __init__(self, stop_after: float, min_steps: int = 0):
        self.stop_after = stop_after
        self.min_steps = min_steps
        self.started = 0.0
        self.step_ends: list[float] = []
        self.stopped = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_ends.append(time.monotonic() - self.started)
        late = self.step_ends[-1] >= self.stop_after and len(self.step_ends) >= self.min_steps
        if late and state.global_step < state.max_steps:
            control.should_training_stop = True
            self.stopped = True
        return control


def time_schedule(
    recipe: PeerRecipe, budget_seconds: float, warmup_proportion: float, decay_proportion: float,
    time_fn: Callable[[], float] = time.monotonic,
) -> tuple[BudgetClock, list[TrainerCallback]]:
    """The recipe's schedule over a wall-clock budget: its clock, and the callbacks that end training at the budget
    and set the LR by the share of it used (warmup, then the recipe's decay to zero at the end of the budget), as
    run_mlm.py's time-based schedule does. Give the Trainer `peer_training_arguments(..., max_steps=None, ...)`."""
    clock = BudgetClock(budget_seconds, time_fn=time_fn)
    lr = TimeBasedLRCallback(clock, warmup_proportion, recipe.time_curve, cooldown_proportion=decay_proportion,
                             cooldown_shape=recipe.decay_type or "linear")
    return clock, [BudgetCallback(clock), lr]


def peer_config(recipe: PeerRecipe, shape: ModelShape, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The peer's config at `shape`, with the tokenizer's vocabulary and special tokens; everything else default."""
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        max_position_embeddings=shape.max_seq_length,
        pad_token_id=tokenizer.pad_token_id,
    )
    if recipe is BERT_RECIPE:
        return BertConfig(**common, intermediate_size=shape.bert_intermediate_size)
    return ModernBertConfig(
        **common,
        intermediate_size=shape.modernbert_intermediate_size,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        sparse_prediction=True,
    )


def build_peer(recipe: PeerRecipe, shape: ModelShape, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A freshly initialised masked LM of the peer, with PyTorch SDPA attention."""
    return AutoModelForMaskedLM.from_config(peer_config(recipe, shape, tokenizer), attn_implementation="sdpa")


def peer_training_arguments(
    recipe: PeerRecipe, output_dir: Path, learning_rate: float, max_steps: int | None, batch_size: int,
    warmup_proportion: float, decay_proportion: float, seed: int,
) -> TrainingArguments:
    """The recipe's TrainingArguments: `max_steps` steps of `batch_size`, no evaluation and no checkpoint.

    With `max_steps=None` the schedule is left to `time_schedule`'s callbacks: a constant scheduler whose factor
    they set, and no step limit (the budget ends training).
    """
    scheduler_kwargs = {}
    if max_steps is None:
        scheduler_type, warmup_steps, max_steps = "constant", 0, NO_STEP_LIMIT
    else:
        scheduler_type, warmup_steps = recipe.lr_scheduler_type, warmup_proportion
        if recipe.lr_scheduler_type == "warmup_stable_decay":
            scheduler_kwargs = {"num_decay_steps": max(1, round(decay_proportion * max_steps)),
                                "decay_type": recipe.decay_type}
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type=scheduler_type,
        lr_scheduler_kwargs=scheduler_kwargs,
        warmup_steps=warmup_steps,
        max_steps=max_steps,
        weight_decay=recipe.weight_decay,
        adam_beta1=recipe.adam_beta1,
        adam_beta2=recipe.adam_beta2,
        adam_epsilon=recipe.adam_epsilon,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="all",
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
    )


def train_peer(
    recipe: PeerRecipe, shape: ModelShape, train, tokenizer: PreTrainedTokenizerBase,
    training_args: TrainingArguments, callbacks: list[TrainerCallback],
) -> tuple[PreTrainedModel, TrainerState, Trainer]:
    """Train a fresh peer with the stock Trainer, the recipe's masking and `callbacks` (a time cap, or
    `time_schedule`'s)."""
    set_seed(training_args.seed)
    model = build_peer(recipe, shape, tokenizer)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=recipe.mlm_probability),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.train()
    return model, trainer.state, trainer


def probe_steps_per_second(
    recipe: PeerRecipe, shape: ModelShape, train, tokenizer: PreTrainedTokenizerBase, output_dir: Path,
    batch_size: int, learning_rate: float, seconds: float, seed: int,
) -> float:
    """Training steps per second of the peer over `seconds` (8 steps at least), the first 3 (warm-up) left out."""
    times = StepTimes(seconds, min_steps=8)
    training_args = peer_training_arguments(
        recipe, output_dir, learning_rate, NO_STEP_LIMIT, batch_size, 0.06, 0.2, seed
    )
    train_peer(recipe, shape, train, tokenizer, training_args, [times])
    return (len(times.step_ends) - 3) / (times.step_ends[-1] - times.step_ends[2])
