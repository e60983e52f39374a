"""Quality per hour: budget-bert (time-based LR) against HuggingFace's stock recipe, same data, same wall clock.

    python bench/quality_per_hour.py                         # 3 minutes per run, about 15 minutes in all
    python bench/quality_per_hour.py --budget_minutes 1      # a quick check

Every run gets the same corpus (the standard library's documentation), WordPiece tokenizer, prepared data
(`budget_bert.demo`'s stages, in `--work_dir`), model shape, batch size, optimizer settings and wall-clock budget:

- budget-bert: `run_mlm.py` with BudgetBertForMaskedLM (pre-LN), the peak LR `--budget_bert_learning_rate` as a
  function of the budget used (6% warmup, linear decay), stopped by the budget;
- baseline: stock `BertForMaskedLM` (post-LN) with `DataCollatorForLanguageModeling` and the stock `Trainer`,
  `lr_scheduler_type linear` with 6% warmup over `max_steps` = the steps per second of a short probe run x the
  budget in seconds, what a careful user of HF's run_mlm.py would do. A time cap stops it at the budget should the
  probe have been optimistic (the report says so). Each of `--baseline_learning_rates` gets a full run, and the
  best one is compared: post-LN BERT does not train at the pre-LN model's 1e-3, so each model gets its own LR.

Each final model is then scored on the same held-out validation examples under the same masks
(`--eval_mask_draws` seeded draws of BERT's 15% masking): MLM loss, perplexity, and the ratio of perplexities.
The runs are sequential on a shared machine whose speed varies, so the steps and tokens of each run are reported.
No run evaluates during training (it would spend the budget); the probe's time is not charged to the baseline.
"""

import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    HfArgumentParser,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from budget_bert.data.loading import load_prepared_dataset
from budget_bert.data.metadata import TOKENIZER_DIR
from budget_bert.demo import build_corpus, build_prepared_data, build_tokenizer, run_script
from budget_bert.report import load_run


@dataclass
class QualityPerHourArguments:
    """What to compare, and how."""

    work_dir: str = field(
        default="outputs/quality_per_hour",
        metadata={"help": "Folder for the corpus, tokenizer and data (reused by later runs) and the runs."},
    )
    budget_minutes: float = field(default=3.0, metadata={"help": "Wall-clock training budget of each run."})
    hidden_size: int = field(default=256, metadata={"help": "Width of both encoders."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Layers of both encoders."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads of both encoders."})
    intermediate_size: int = field(default=1024, metadata={"help": "Feed-forward width of both encoders."})
    max_seq_length: int = field(default=128, metadata={"help": "Tokens per example."})
    vocab_size: int = field(default=8192, metadata={"help": "WordPiece vocabulary trained on the corpus."})
    stdlib_modules: list[str] | None = field(
        default=None, metadata={"help": "Standard-library modules of the corpus (default: all, about 1.6 MB)."}
    )
    validation_proportion: float = field(
        default=0.05, metadata={"help": "Share of the packed examples held out to score both models."}
    )
    batch_size: int = field(default=32, metadata={"help": "Sequences per optimizer step, both runs."})
    budget_bert_learning_rate: float = field(
        default=1e-3, metadata={"help": "budget-bert's peak LR (the paper's for its pre-LN model)."}
    )
    baseline_learning_rates: list[float] = field(
        default_factory=lambda: [1e-4, 5e-4],
        metadata={"help": "Peak LRs of the stock BERT baseline, each a full run; the best one is compared."},
    )
    warmup_proportion: float = field(default=0.06, metadata={"help": "Warmup share of both schedules."})
    probe_seconds: float = field(
        default=20.0, metadata={"help": "Length of the baseline's throughput probe, which sets its max_steps."}
    )
    eval_mask_draws: int = field(
        default=4, metadata={"help": "Seeded masking draws of the validation examples that both models are scored on."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of the data split, the initial weights and the masks."})
    output_json: str | None = field(default=None, metadata={"help": "Also write the results to this JSON file."})

    def __post_init__(self):
        problems = []
        for name in ("budget_minutes", "probe_seconds"):
            if not getattr(self, name) > 0:
                problems.append(f"--{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.validation_proportion < 1:
            problems.append(f"--validation_proportion must be in (0, 1), got {self.validation_proportion}")
        if not self.baseline_learning_rates:
            problems.append("--baseline_learning_rates needs at least one learning rate")
        if self.eval_mask_draws < 1:
            problems.append(f"--eval_mask_draws must be >= 1, got {self.eval_mask_draws}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def budget_seconds(self) -> float:
        """The budget of each run in seconds."""
        return self.budget_minutes * 60


@dataclass
class RunResult:
    """One training run and its score on the shared validation masks."""

    name: str
    learning_rate: float
    steps: int
    tokens: int
    train_seconds: float
    eval_loss: float
    planned_steps: int | None = None
    stopped_by_time_cap: bool = False

    @property
    def perplexity(self) -> float:
        """`exp(eval_loss)`."""
        return math.exp(self.eval_loss)


class StepTimes(TrainerCallback):
    """Records when each optimizer step ends and stops training past `stop_after` seconds from train begin.

    The probe uses it to measure steps per second (and goes on to `min_steps` steps however slow they are); the
    baseline uses it as its time cap (`stopped` says whether it acted before `max_steps`).
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


def masked_validation_batches(
    validation, tokenizer: PreTrainedTokenizerBase, batch_size: int, draws: int, seed: int
) -> list[dict[str, torch.Tensor]]:
    """The validation examples masked `draws` times by the stock collator from one seed: the same for every model."""
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=seed)
    rows = [{"input_ids": ids} for ids in validation["input_ids"]]
    starts = range(0, len(rows), batch_size)
    return [collator(rows[start : start + batch_size]) for _ in range(draws) for start in starts]


@torch.no_grad()
def masked_lm_loss(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> float:
    """Mean cross-entropy over every masked position of `batches` (each batch's mean loss weighted by its count)."""
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        masked = int((batch["labels"] != -100).sum())
        total += model(**batch).loss.item() * masked
        count += masked
    return total / count


def training_arguments(args: QualityPerHourArguments, output_dir: Path, learning_rate: float, max_steps: int):
    """The baseline's TrainingArguments: the optimizer settings of the budget-bert run, HF's linear schedule."""
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=args.batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=args.warmup_proportion,
        max_steps=max_steps,
        weight_decay=0.01,
        adam_beta1=0.9,
        adam_beta2=0.98,
        adam_epsilon=1e-6,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        include_num_input_tokens_seen="all",
        seed=args.seed,
        use_cpu=not torch.cuda.is_available(),
    )


def bert_config(args: QualityPerHourArguments, tokenizer: PreTrainedTokenizerBase) -> BertConfig:
    """Stock BERT (post-LN) of the compared shape."""
    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads,
        intermediate_size=args.intermediate_size,
        max_position_embeddings=args.max_seq_length,
        pad_token_id=tokenizer.pad_token_id,
    )


def train_baseline(args, train, tokenizer, output_dir: Path, learning_rate: float, max_steps: int, cap: StepTimes):
    """Train a fresh stock BertForMaskedLM with the stock Trainer, `cap` among its callbacks."""
    set_seed(args.seed)
    model = BertForMaskedLM(bert_config(args, tokenizer))
    trainer = Trainer(
        model=model,
        args=training_arguments(args, output_dir, learning_rate, max_steps),
        train_dataset=train,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15),
        processing_class=tokenizer,
        callbacks=[cap],
    )
    trainer.train()
    return model, trainer.state


def probe_steps_per_second(args, train, tokenizer, output_dir: Path) -> float:
    """Steps per second of the baseline over `--probe_seconds` (8 steps at least), the first 3 (warm-up) left out."""
    times = StepTimes(args.probe_seconds, min_steps=8)
    train_baseline(args, train, tokenizer, output_dir, args.baseline_learning_rates[0], 10**9, times)
    return (len(times.step_ends) - 3) / (times.step_ends[-1] - times.step_ends[2])


def run_budget_bert(args: QualityPerHourArguments, data_dir: Path, output_dir: Path, batches) -> RunResult:
    """run_mlm.py inside the budget (no validation during training), then its final model on the shared masks."""
    run_script("run_mlm.py", [
        "--dataset_path", str(data_dir), "--output_dir", str(output_dir),
        "--hidden_size", str(args.hidden_size), "--num_hidden_layers", str(args.num_hidden_layers),
        "--num_attention_heads", str(args.num_attention_heads), "--intermediate_size", str(args.intermediate_size),
        "--max_position_embeddings", str(args.max_seq_length), "--encoder_ln_mode", "pre-ln",
        "--lr", str(args.budget_bert_learning_rate), "--lr_schedule", "time", "--curve", "linear",
        "--warmup_proportion", str(args.warmup_proportion),
        "--optimizer_type", "adamw", "--weight_decay", "0.01", "--adam_beta1", "0.9", "--adam_beta2", "0.98",
        "--adam_eps", "1e-6",
        "--train_micro_batch_size_per_gpu", str(args.batch_size), "--train_batch_size", str(args.batch_size),
        "--total_training_time", repr(args.budget_seconds / 3600), "--print_steps", "10", "--seed", str(args.seed),
    ])
    run = load_run(output_dir)
    model = AutoModelForMaskedLM.from_pretrained(output_dir)
    return RunResult(
        name="budget-bert", learning_rate=args.budget_bert_learning_rate, steps=run.global_step,
        tokens=run.tokens_seen or 0, train_seconds=run.elapsed_seconds or math.nan,
        eval_loss=masked_lm_loss(model, batches),
    )


def compare(args: QualityPerHourArguments) -> dict:
    """Prepare the data, run budget-bert and every baseline, and score them; returns the results as a dict."""
    work_dir = Path(args.work_dir).resolve()
    corpus_file = build_corpus(work_dir / "corpus", args.stdlib_modules)
    tokenizer_dir = build_tokenizer(work_dir / "tokenizer", corpus_file, args.vocab_size)
    data_dir = build_prepared_data(
        work_dir / "data", corpus_file, tokenizer_dir, args.max_seq_length, 8, args.validation_proportion, args.seed
    )
    train, validation, metadata = load_prepared_dataset(data_dir)
    tokenizer = AutoTokenizer.from_pretrained(data_dir / TOKENIZER_DIR)
    batches = masked_validation_batches(validation, tokenizer, 64, args.eval_mask_draws, args.seed)
    runs_dir = work_dir / "runs"
    shutil.rmtree(runs_dir, ignore_errors=True)

    results = [run_budget_bert(args, data_dir, runs_dir / "budget-bert", batches)]
    print(f"budget-bert: eval loss {results[0].eval_loss:.4f}", flush=True)

    steps_per_second = probe_steps_per_second(args, train, tokenizer, runs_dir / "probe")
    max_steps = max(1, int(steps_per_second * args.budget_seconds))
    print(f"probe: {steps_per_second:.3f} steps/s -> max_steps {max_steps}", flush=True)
    for learning_rate in args.baseline_learning_rates:
        started = time.monotonic()
        cap = StepTimes(args.budget_seconds)
        model, state = train_baseline(
            args, train, tokenizer, runs_dir / f"bert-lr{learning_rate:g}", learning_rate, max_steps, cap
        )
        results.append(RunResult(
            name="stock BERT", learning_rate=learning_rate, steps=state.global_step,
            tokens=state.num_input_tokens_seen, train_seconds=cap.step_ends[-1] if cap.step_ends else 0.0,
            eval_loss=masked_lm_loss(model, batches), planned_steps=max_steps, stopped_by_time_cap=cap.stopped,
        ))
        print(f"stock BERT lr {learning_rate:g}: eval loss {results[-1].eval_loss:.4f} "
              f"({time.monotonic() - started:.0f} s)", flush=True)

    ours = results[0]
    best = min(results[1:], key=lambda result: result.eval_loss)
    return {
        "arguments": asdict(args),
        "validation": {
            "examples": len(validation), "mask_draws": args.eval_mask_draws,
            "masked_tokens": sum(int((batch["labels"] != -100).sum()) for batch in batches),
        },
        "train_examples": metadata.train_examples,
        "probe_steps_per_second": steps_per_second,
        "runs": [{**asdict(result), "perplexity": result.perplexity} for result in results],
        "best_baseline_learning_rate": best.learning_rate,
        "perplexity_ratio": best.perplexity / ours.perplexity,
        "perplexity_reduction": 1 - ours.perplexity / best.perplexity,
    }


def render(results: dict) -> str:
    """The results as a markdown table and a one-line verdict."""
    lines = [
        "| run | peak LR | steps (planned) | tokens seen | train s | eval MLM loss | perplexity |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in results["runs"]:
        planned = "" if run["planned_steps"] is None else f" ({run['planned_steps']})"
        capped = ", time cap" if run["stopped_by_time_cap"] else ""
        lines.append(
            f"| {run['name']} | {run['learning_rate']:g} | {run['steps']:,}{planned}{capped} | {run['tokens']:,} | "
            f"{run['train_seconds']:.0f} | {run['eval_loss']:.4f} | {run['perplexity']:,.1f} |"
        )
    validation = results["validation"]
    lines += [
        "",
        f"Scored on {validation['examples']} held-out examples x {validation['mask_draws']} mask draws "
        f"({validation['masked_tokens']:,} masked tokens). "
        f"Best baseline LR {results['best_baseline_learning_rate']:g}; "
        f"perplexity ratio (best baseline / budget-bert) {results['perplexity_ratio']:.3f}: budget-bert's "
        f"perplexity is {abs(results['perplexity_reduction']):.1%} "
        f"{'lower' if results['perplexity_reduction'] >= 0 else 'higher'}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Parse, compare, print (and optionally save) the results."""
    parser = HfArgumentParser(QualityPerHourArguments)
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    except ValueError as err:
        parser.error(str(err))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, command: {' '.join(sys.argv)}", flush=True)
    results = compare(args)
    print("\n" + render(results), flush=True)
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
