"""Recipe tuning by steps: how good a BudgetBert (or ModernBERT) recipe is after a fixed number of optimizer steps.

    python bench/recipe_steps.py --data outputs/tune/data --steps 120 --learning_rate 2e-3 --mlm_probability 0.3 \
        --config '{"mlp_type": "glu", "intermediate_size": 683, "position_embedding_type": "rope"}'
    python bench/recipe_steps.py --data outputs/tune/data --model modernbert --learning_rate 8e-4

Loss after N steps does not depend on how busy the machine is, so recipes can be compared while other work runs;
the speed of each recipe is measured separately, interleaved in one process, by `bench/model_throughput.py`.
Training is a plain AdamW loop over random batches of the prepared data (`prepare_data.py`'s folder) with warmup
and a linear decay to zero over the N steps (or ModernBERT's warmup-stable-decay, `--curve wsd`: run_mlm.py's curves, by steps), dynamic masking
at `--mlm_probability`; the score is the MLM loss on the validation split under fixed 15% masks. Prints one JSON
line.
"""

import json
import math
import time
from dataclasses import dataclass, field

import torch
from datasets import load_from_disk
from transformers import (
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    HfArgumentParser,
    ModernBertConfig,
    ModernBertForMaskedLM,
)

from budget_bert import BudgetBertConfig, BudgetBertForMaskedLM
from trainer_callbacks import lr_curves
from trainer_callbacks.lr_curves import CURVES, DEFAULT_COOLDOWN_PROPORTION


@dataclass
class RecipeStepsArguments:
    """One recipe, trained for a fixed number of steps."""

    data: str = field(metadata={"help": "Folder written by prepare_data.py (with a validation split)."})
    model: str = field(default="budget-bert", metadata={"help": "'budget-bert' or 'modernbert'."})
    config: str = field(default="{}", metadata={"help": "JSON of config fields over the shape's defaults."})
    hidden_size: int = field(default=256, metadata={"help": "Width."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Layers."})
    num_attention_heads: int = field(default=4, metadata={"help": "Heads."})
    steps: int = field(default=120, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=32, metadata={"help": "Sequences per step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak LR."})
    warmup_proportion: float = field(default=0.06, metadata={"help": "Share of the steps warming up."})
    curve: str = field(
        default="linear",
        metadata={"help": f"run_mlm.py's LR curve ({', '.join(CURVES)}) over the steps instead of the budget: "
                  "'linear' decays to zero after the warmup; 'wsd' holds the peak LR, then cools down over the last "
                  "--cooldown_proportion (ModernBERT's schedule with the 1-sqrt cooldown)."},
    )
    cooldown_proportion: float = field(
        default=DEFAULT_COOLDOWN_PROPORTION, metadata={"help": "--curve wsd: share of the steps cooling down."}
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (matrices only)."})
    adam_beta2: float = field(default=0.98, metadata={"help": "AdamW beta2."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Training masking rate."})
    seed: int = field(default=0, metadata={"help": "Seed of the weights, batches and masks."})
    threads: int = field(default=1, metadata={"help": "Torch threads."})

    def __post_init__(self):
        if self.curve not in CURVES:
            raise ValueError(f"--curve {self.curve}: use one of {', '.join(CURVES)}")
        if not 0 < self.cooldown_proportion <= 1 - self.warmup_proportion:
            raise ValueError(f"--cooldown_proportion must be in (0, 1 - --warmup_proportion], got "
                             f"{self.cooldown_proportion}")

    def lr_factor(self, step: int) -> float:
        """The share of the peak LR at optimizer step `step` of `steps`: run_mlm.py's curve, by steps."""
        return lr_curves.lr_factor(step / self.steps, self.warmup_proportion, self.curve,
                                   cooldown_proportion=self.cooldown_proportion)


def build_model(args: RecipeStepsArguments, tokenizer) -> torch.nn.Module:
    """The model of `args`: BudgetBert with BERT's 4H MLP and dropout 0.1 unless `--config` says otherwise, or
    ModernBERT at its own defaults with the MLP parameters of BERT's (gated width 8H/3)."""
    shape = {"vocab_size": len(tokenizer), "hidden_size": args.hidden_size, "num_hidden_layers": args.num_hidden_layers,
             "num_attention_heads": args.num_attention_heads, "max_position_embeddings": 128,
             "pad_token_id": tokenizer.pad_token_id}
    overrides = json.loads(args.config)
    if args.model == "modernbert":
        config = ModernBertConfig(**shape, intermediate_size=round(8 * args.hidden_size / 3), sparse_prediction=True,
                                  cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
                                  bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, **overrides)
        return ModernBertForMaskedLM._from_config(config, attn_implementation="sdpa")
    return BudgetBertForMaskedLM(BudgetBertConfig(**{"intermediate_size": 4 * args.hidden_size, **shape, **overrides}))


def main(argv: list[str] | None = None) -> dict:
    """Train, score, print the JSON line."""
    (args,) = HfArgumentParser(RecipeStepsArguments).parse_args_into_dataclasses(args=argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_from_disk(args.data)
    tokenizer = AutoTokenizer.from_pretrained(f"{args.data}/tokenizer")
    model = build_model(args, tokenizer).train()
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    others = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": args.weight_decay}, {"params": others, "weight_decay": 0.0}],
        lr=args.learning_rate, betas=(0.9, args.adam_beta2), eps=1e-6,
    )

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, args.lr_factor)
    generator = torch.Generator().manual_seed(args.seed)
    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=args.mlm_probability, seed=args.seed)
    train = data["train"]
    step_seconds = 0.0
    for _ in range(args.steps):
        rows = torch.randint(len(train), (args.batch_size,), generator=generator).tolist()
        batch = collate([{"input_ids": train[row]["input_ids"]} for row in rows])
        started = time.perf_counter()
        loss = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step_seconds += time.perf_counter() - started

    validation = data["validation"]
    score = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=1234)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(validation), 32):
            batch = score([{"input_ids": ids} for ids in validation[start:start + 32]["input_ids"]])
            labelled = int((batch["labels"] != -100).sum())
            total += model(input_ids=batch["input_ids"], labels=batch["labels"]).loss.item() * labelled
            count += labelled
    loss = total / count
    result = {"model": args.model, "config": json.loads(args.config), "learning_rate": args.learning_rate,
              "mlm_probability": args.mlm_probability, "weight_decay": args.weight_decay, "steps": args.steps,
              "curve": args.curve,
              "seed": args.seed, "eval_loss": round(loss, 4), "perplexity": round(math.exp(loss), 1),
              "parameters": sum(p.numel() for p in model.parameters()),
              "seconds_per_step": round(step_seconds / args.steps, 4)}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
