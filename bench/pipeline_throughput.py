"""run_mlm.py's own training throughput against the model's alone at the same shape and micro batch.

The question: do the data pipeline (loading, the masking collator, loader workers) and the Trainer's step around
the model cost throughput? Both sides train the same model (the run's own `config.json`) on `--batch` sequences per
optimizer step, with fused AdamW, no gradient clipping and `--dtype` autocast:

1. `python run_mlm.py` trains for `--budget_seconds` on the prepared data at `--preset`'s shape, logging every
   `--logging_steps` steps; its figure is the median `tokens_per_second` of its training logs (input tokens over
   the budget seconds between two logs: data, collator, forward, backward, optimizer, callbacks), the first
   `--warmup_logs` left out;
2. `bench/model_throughput.py`'s training step (`Trainee`) runs the same model on ready-made batches in this process:
   `--rounds` timed rounds of `--steps_per_round` steps after `--warmup_rounds`, median over rounds.

The ratio run_mlm / model is the share of the model's throughput that the whole pipeline keeps (issue 13's target:
at least 0.9). Flags after `--` go to run_mlm.py as they are (e.g. `-- --dataloader_num_workers 4`).

    python bench/pipeline_throughput.py --dataset_path data/prepared --output_dir /tmp/pipeline --preset bert-base \
        --batch 256 --dtype bf16 --budget_seconds 60
"""

import json
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForMaskedLM, HfArgumentParser

import budget_bert  # noqa: F401 - registers BudgetBert with the Auto classes
from budget_bert.data.metadata import METADATA_NAME, PreparedDataMetadata
from model_throughput import DTYPES, PRESETS, BenchmarkArguments, Trainee, make_batches
from trainer_callbacks.snapshots import END_SNAPSHOT_NAME, SNAPSHOTS_DIR


REPO = Path(__file__).resolve().parents[1]


@dataclass
class PipelineArguments:
    """The run, the shape, and how to time the model alone."""

    dataset_path: str = field(metadata={"help": "Prepared data (prepare_data.py's --output_dir)."})
    output_dir: str = field(metadata={"help": "run_mlm.py's --output_dir: a new or empty folder."})
    preset: str = field(default="bert-base", metadata={"help": f"Model shape, one of {sorted(PRESETS)}."})
    batch: int | None = field(
        default=None, metadata={"help": "Sequences per optimizer step, on both sides (default: the preset's)."}
    )
    dtype: str = field(
        default="fp32", metadata={"help": f"One of {sorted(DTYPES)}: bf16 is autocast (run_mlm.py's --bf16)."}
    )
    device: str | None = field(
        default=None,
        metadata={"help": "Device of the model-alone side: cuda where there is one, else cpu (run_mlm.py's choice)."},
    )
    budget_seconds: float = field(default=60.0, metadata={"help": "run_mlm.py's budget (--total_training_time)."})
    logging_steps: int = field(default=10, metadata={"help": "run_mlm.py's --print_steps: steps per figure."})
    warmup_logs: int = field(
        default=2, metadata={"help": "Training logs left out at the start (start-up, first kernels, compilation)."}
    )
    rounds: int = field(default=10, metadata={"help": "Timed rounds of the model alone."})
    warmup_rounds: int = field(default=3, metadata={"help": "Rounds of the model alone run first, not timed."})
    steps_per_round: int = field(default=5, metadata={"help": "Training steps per round of the model alone."})
    target: float = field(default=0.9, metadata={"help": "The ratio run_mlm / model that meets the target."})
    seed: int = field(default=0, metadata={"help": "Seed of the run, the weights and the batches."})
    output_json: str | None = field(default=None, metadata={"help": "Also write the results to this JSON file."})

    def __post_init__(self):
        problems = []
        if self.preset not in PRESETS:
            problems.append(f"--preset must be one of {sorted(PRESETS)}, got {self.preset!r}.")
        if self.dtype not in DTYPES:
            problems.append(f"--dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}.")
        for name in ("budget_seconds", "logging_steps", "rounds", "steps_per_round"):
            if getattr(self, name) <= 0:
                problems.append(f"--{name} must be positive, got {getattr(self, name)}.")
        for name in ("warmup_logs", "warmup_rounds"):
            if getattr(self, name) < 0:
                problems.append(f"--{name} must be >= 0, got {getattr(self, name)}.")
        if self.batch is not None and self.batch <= 0:
            problems.append(f"--batch must be positive, got {self.batch}.")
        output_dir = Path(self.output_dir)
        if output_dir.exists() and any(output_dir.iterdir()):
            problems.append(f"--output_dir {output_dir} is not empty: run_mlm.py would resume the run in it; "
                            "pick a new folder or delete it.")
        if not (Path(self.dataset_path) / METADATA_NAME).is_file():
            problems.append(f"--dataset_path {self.dataset_path} holds no {METADATA_NAME}: prepare it with "
                            "prepare_data.py first.")
        if problems:
            raise ValueError("\n".join(problems))
        self.batch = self.batch or PRESETS[self.preset]["batch"]
        self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")


def run_mlm_command(args: PipelineArguments, seq_len: int, extra: list[str]) -> list[str]:
    """run_mlm.py at the preset's shape and `--batch` (no accumulation), with the model-alone side's optimizer
    settings: fused AdamW, no clipping; no validation and no checkpoint before the end, so that every log window is
    training alone."""
    shape = {name: value for name, value in PRESETS[args.preset].items() if name != "batch"}
    return [
        sys.executable, str(REPO / "run_mlm.py"),
        "--dataset_path", args.dataset_path, "--output_dir", args.output_dir,
        *[token for name, value in shape.items() for token in (f"--{name}", str(value))],
        "--max_position_embeddings", str(max(512, seq_len)),
        "--train_micro_batch_size_per_gpu", str(args.batch), "--train_batch_size", str(args.batch),
        "--optim", "adamw_torch_fused", "--max_grad_norm", "0",
        "--total_training_time", repr(args.budget_seconds / 3600), "--print_steps", str(args.logging_steps),
        "--disable_tqdm", "true", "--seed", str(args.seed),
        *(["--bf16"] if args.dtype == "bf16" else []),
        *extra,
    ]


def run_mlm_throughput(output_dir: Path, warmup_logs: int) -> tuple[float, int]:
    """The median `tokens_per_second` of the run's training logs after the first `warmup_logs`, and their count.

    Raises `ValueError` when no log is left, naming the flags that give more.
    """
    state = json.loads((output_dir / "trainer_state.json").read_text())
    rates = [entry["tokens_per_second"] for entry in state["log_history"] if "tokens_per_second" in entry]
    counted = rates[warmup_logs:]
    if not counted:
        raise ValueError(f"run_mlm.py logged {len(rates)} training figures, none after --warmup_logs "
                         f"{warmup_logs}: raise --budget_seconds or lower --logging_steps.")
    return statistics.median(counted), len(counted)


def model_throughput(args: PipelineArguments, config, seq_len: int) -> float:
    """Median tokens/s of model_throughput's training step on `config`'s model at `--batch` x `seq_len`."""
    bench = BenchmarkArguments(
        preset=args.preset, batch=args.batch, seq_len=seq_len, vocab_size=config.vocab_size, device=args.device,
        dtype=args.dtype, rounds=args.rounds, warmup_rounds=args.warmup_rounds,
        steps_per_round=args.steps_per_round, references="bert", seed=args.seed,
    )
    torch.manual_seed(args.seed)
    model = AutoModelForMaskedLM.from_config(config).to(args.device).train()
    trainee = Trainee(model, bench, attention_mask=False)  # as run_mlm.py's collator gives the packed batches
    batches = make_batches(bench, args.steps_per_round)
    tokens_per_round = args.batch * seq_len * args.steps_per_round
    rates = []
    for round_index in range(args.warmup_rounds + args.rounds):
        seconds, _ = trainee.run(batches)
        if round_index >= args.warmup_rounds:
            rates.append(tokens_per_round / seconds)
    return statistics.median(rates)


def main():
    """Run run_mlm.py, then the model alone; print (and optionally save) both figures and their ratio."""
    argv, extra = sys.argv[1:], []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1:]
    parser = HfArgumentParser(PipelineArguments)
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:
        parser.error(str(error))
    seq_len = PreparedDataMetadata.from_json_file(Path(args.dataset_path) / METADATA_NAME).max_seq_length
    command = run_mlm_command(args, seq_len, extra)
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)

    output_dir = Path(args.output_dir)
    try:
        run_rate, logs = run_mlm_throughput(output_dir, args.warmup_logs)
    except ValueError as error:
        sys.exit(f"pipeline_throughput.py: error: {error}")
    config = AutoConfig.from_pretrained(output_dir / SNAPSHOTS_DIR / END_SNAPSHOT_NAME)
    model_rate = model_throughput(args, config, seq_len)
    ratio = run_rate / model_rate
    met = ratio >= args.target
    print(f"preset {args.preset}, batch {args.batch} x seq {seq_len}, {args.dtype} on {args.device}")
    print(f"run_mlm.py: {run_rate:,.0f} tokens/s (median of {logs} training logs of {args.logging_steps} steps)")
    print(f"model alone: {model_rate:,.0f} tokens/s (median of {args.rounds} rounds of {args.steps_per_round} steps)")
    print(f"ratio run_mlm / model: {ratio:.3f} (target >= {args.target}: {'met' if met else 'missed'})")
    if args.output_json:
        results = {
            "args": asdict(args), "run_mlm_command": command, "seq_len": seq_len,
            "run_mlm_tokens_per_second": run_rate, "run_mlm_logs_counted": logs,
            "model_tokens_per_second": model_rate, "ratio": ratio, "target_met": met,
        }
        Path(args.output_json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
