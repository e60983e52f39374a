"""Command-line arguments of run_glue.py: HuggingFace run_glue's flags plus early stopping, on transformers 5.

Parsing goes through `HfArgumentParser` into `ModelArguments`, `DataArguments`, `FinetuneArguments` and the
stock `TrainingArguments`. Two spellings that transformers 5 dropped still work, so the academic-budget-bert
README's finetuning command runs as written:

- `--evaluation_strategy` is an alias of `--eval_strategy` (same meaning). Giving the flag twice, or under both
  spellings, is fine with the same value and an error with different values.
- `--overwrite_output_dir` is a flag of `FinetuneArguments` with HuggingFace run_glue's meaning: without it, a
  run whose `--output_dir` holds checkpoints resumes from the last one, and a non-empty `--output_dir` without
  checkpoints is an error.

One TrainingArguments default differs: `--average_tokens_across_devices` is False. With one label per example,
each process's mean loss averaged by DDP already is the mean over all examples, while the Trainer's default
multiplies the loss by the number of processes for models whose loss ignores `num_items_in_batch` (stock
`BertForSequenceClassification` among them): gradients N times too large, clipped by `--max_grad_norm`.
"""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser, TrainingArguments
from transformers.trainer_utils import IntervalStrategy

from budget_bert.cli import UsageError, given_flags, json_file_argv, usage_error
from budget_bert.glue.tasks import GLUE_TASKS, LOWER_IS_BETTER, get_task

# Legacy spelling -> canonical TrainingArguments field.
FLAG_ALIASES: dict[str, str] = {"evaluation_strategy": "eval_strategy"}

# TrainingArguments defaults that run_glue.py changes (see the module docstring); explicit flags still win.
TRAINING_DEFAULTS: dict[str, object] = {"average_tokens_across_devices": False}

DATA_EXTENSIONS = {"csv": "csv", "json": "json", "jsonl": "json"}


@dataclass
class ModelArguments:
    """Which snapshot (or Hub model) to finetune, and how to load it."""

    model_name_or_path: str = field(
        metadata={"help": "Path to a saved snapshot (save_pretrained folder) or a model id on the Hub."}
    )
    config_name: str | None = field(
        default=None, metadata={"help": "Config name or path, if not the same as --model_name_or_path."}
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer name or path, if not the same as --model_name_or_path."}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where to cache models and data sets downloaded from the Hub."}
    )
    model_revision: str = field(
        default="main", metadata={"help": "Model version to use on the Hub: a branch, tag or commit id."}
    )
    token: str | None = field(
        default=None, metadata={"help": "Hub token for private models; without it, the one `hf auth login` stored."}
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={
            "help": "Let a model of a type this installation does not know run the code saved next to it (its "
            "config's `auto_map`); only for folders you trust. budget-bert snapshots load without it here: "
            "run_glue.py imports budget_bert, whose registered classes take precedence."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Change fields of the model's config before finetuning, HuggingFace run_mlm.py's syntax "
            "'k=v,k=v' (each key a field of the model's config): e.g. 'classifier_head=lm_head,"
            "classifier_pooling=mean' gives a budget-bert snapshot pretrained before those options the recipe's "
            "classifier, 'classifier_dropout=0.1' another classifier dropout."
        },
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={
            "help": "Re-initialise a classification head whose number of labels differs from the data's, "
            "instead of stopping with an error."
        },
    )


@dataclass
class DataArguments:
    """Which data to finetune and evaluate on: a GLUE task from the Hub, or local csv/json files."""

    task_name: str | None = field(
        default=None,
        metadata={
            "help": f"GLUE task, any case: {', '.join(GLUE_TASKS)}. Without local files its data comes from "
            "the Hub (nyu-mll/glue); with them, the files must have the task's columns."
        },
    )
    train_file: str | None = field(
        default=None, metadata={"help": "A csv or json(l) file of training examples (text column(s) and `label`)."}
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "A csv or json(l) file of validation examples (MNLI: the matched set)."}
    )
    validation_mismatched_file: str | None = field(
        default=None, metadata={"help": "MNLI only: a csv or json(l) file of the mismatched validation set."}
    )
    test_file: str | None = field(
        default=None, metadata={"help": "A csv or json(l) file of examples to predict with --do_predict."}
    )
    max_seq_length: int = field(
        default=128,
        metadata={"help": "Maximum tokens per example after tokenization; longer examples are truncated."},
    )
    pad_to_max_length: bool = field(
        default=True,
        metadata={
            "help": "Pad every example to --max_seq_length; with --no_pad_to_max_length, pad each batch to its "
            "longest example instead."
        },
    )
    overwrite_cache: bool = field(
        default=False, metadata={"help": "Tokenize again instead of reusing the cached tokenized data sets."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N training examples (debugging, quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N examples of each validation set."}
    )
    max_predict_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N examples of each test set."}
    )

    def __post_init__(self):
        problems = []
        if self.task_name is not None:
            try:
                self.task_name = get_task(self.task_name).name
            except ValueError as error:
                problems.append(f"--task_name: {error}")
        if self.task_name is None and not self.data_files:
            problems.append(
                "No data: pass --task_name (GLUE from the Hub) or local files (--train_file, --validation_file)."
            )
        extensions = {Path(path).suffix.lstrip(".") for path in self.data_files.values()}
        unknown = extensions - set(DATA_EXTENSIONS)
        if unknown:
            problems.append(f"Data files must end in .csv, .json or .jsonl, got: {', '.join(sorted(unknown))}.")
        elif len({DATA_EXTENSIONS[extension] for extension in extensions}) > 1:
            problems.append("--train_file, --validation_file and --test_file must all be csv or all json(l).")
        if self.validation_mismatched_file is not None and self.task_name != "mnli":
            problems.append("--validation_mismatched_file is for --task_name mnli only.")
        if self.max_seq_length < 1:
            problems.append(f"--max_seq_length must be positive, got {self.max_seq_length}.")
        if problems:
            raise ValueError("Invalid data arguments:\n- " + "\n- ".join(problems))

    @property
    def data_files(self) -> dict[str, str]:
        """The local files given, by flag name without `_file` (`train`, `validation`, ...)."""
        files = {
            "train": self.train_file,
            "validation": self.validation_file,
            "validation_mismatched": self.validation_mismatched_file,
            "test": self.test_file,
        }
        return {split: path for split, path in files.items() if path is not None}


@dataclass
class FinetuneArguments:
    """Run control beyond `TrainingArguments`: output-folder reuse and early stopping."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train from scratch in a non-empty --output_dir. Without it, a folder with checkpoints "
            "resumes from the last one and a non-empty folder without checkpoints is an error."
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "Stop training after this many evaluations without improvement of the validation metric "
            "(--metric_for_best_model, default: the task's headline metric). Needs --eval_strategy steps|epoch."
        },
    )
    early_stopping_threshold: float = field(
        default=0.0, metadata={"help": "Smallest improvement of the validation metric that resets the patience."}
    )

    def __post_init__(self):
        problems = []
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            problems.append(f"--early_stopping_patience must be at least 1, got {self.early_stopping_patience}.")
        if self.early_stopping_threshold < 0:
            problems.append(f"--early_stopping_threshold must be >= 0, got {self.early_stopping_threshold}.")
        if problems:
            raise ValueError("Invalid finetuning arguments:\n- " + "\n- ".join(problems))


def _canonical_name(name: str, aliases: dict[str, str]) -> str:
    name = name.replace("-", "_")
    return aliases.get(name, name)


def _refuse_contradictions(given: list[tuple[str, str, object]]) -> None:
    """Raise one `ValueError` if a canonical flag got different values; `given` holds (canonical, spelling, value)."""
    by_flag: dict[str, list[tuple[str, object]]] = {}
    for canonical, spelling, value in given:
        by_flag.setdefault(canonical, []).append((spelling, value))
    contradictions = [
        f"--{canonical} is given different values: " + ", ".join(f"--{spelling} {value}" for spelling, value in uses)
        for canonical, uses in by_flag.items()
        if len({str(value) for _, value in uses}) > 1
    ]
    if contradictions:
        raise ValueError("Contradictory flags:\n- " + "\n- ".join(contradictions))


def resolve_flag_aliases(argv: list[str], aliases: dict[str, str] = FLAG_ALIASES) -> list[str]:
    """Rewrite legacy flags (`--evaluation_strategy`) to their canonical names (`--eval_strategy`).

    A flag given several times, under either spelling, must get the same value each time; otherwise a
    `ValueError` names every contradiction. `--flag value` and `--flag=value`, underscores and dashes are accepted.
    """
    resolved, given = [], []
    for position, token in enumerate(argv):
        name, has_inline_value, inline_value = token[2:].partition("=")
        canonical = _canonical_name(name, aliases)
        if not token.startswith("--") or canonical not in aliases.values():
            resolved.append(token)
            continue
        following = argv[position + 1] if position + 1 < len(argv) else None
        given.append((canonical, name, inline_value if has_inline_value else following))
        resolved.append(f"--{canonical}" + (f"={inline_value}" if has_inline_value else ""))
    _refuse_contradictions(given)
    return resolved


def resolve_key_aliases(config: dict, aliases: dict[str, str] = FLAG_ALIASES) -> dict:
    """`resolve_flag_aliases` for a mapping of arguments (a JSON or YAML file): rename legacy keys."""
    _refuse_contradictions(
        [(_canonical_name(key, aliases), key, value) for key, value in config.items()
         if _canonical_name(key, aliases) in aliases.values()]
    )
    return {_canonical_name(key, aliases): value for key, value in config.items()}


def check_consistency(
    data_args: DataArguments, finetune_args: FinetuneArguments, training_args: TrainingArguments
) -> None:
    """Cross-checks between argument groups; one `ValueError` listing every problem."""
    problems = []
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        problems.append("Nothing to do: pass --do_train, --do_eval and/or --do_predict.")
    if finetune_args.early_stopping_patience is not None and training_args.eval_strategy == IntervalStrategy.NO:
        problems.append(
            "--early_stopping_patience needs evaluations during training: add --eval_strategy steps "
            "(or --evaluation_strategy steps) or epoch."
        )
    if data_args.data_files:
        needs = (
            ("train", training_args.do_train, "--do_train"),
            ("validation", training_args.do_eval, "--do_eval (or --eval_strategy)"),
            ("test", training_args.do_predict, "--do_predict"),
        )
        for split, wanted, flag in needs:
            if wanted and split not in data_args.data_files:
                problems.append(f"{flag} with local data needs --{split}_file.")
    if problems:
        raise ValueError("Inconsistent arguments:\n- " + "\n- ".join(problems))


def parse_args(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, FinetuneArguments, TrainingArguments]:
    """
    Parse run_glue.py's command line (or a single `.json` file of arguments) and check it.

    Raises:
        UsageError: every problem found, each naming its flag (an unknown `--task_name`, contradictory spellings,
            a flag that cannot act in the combination given), before any model or data is loaded.
    """
    parser = HfArgumentParser((ModelArguments, DataArguments, FinetuneArguments, TrainingArguments))
    parser.prog = "run_glue.py"
    parser.set_defaults(**TRAINING_DEFAULTS)
    try:
        argv = resolve_flag_aliases(json_file_argv(argv))
        model_args, data_args, finetune_args, training_args = parser.parse_args_into_dataclasses(
            args=argv, look_for_args_file=False
        )
        check_consistency(data_args, finetune_args, training_args)
        training_args = minimise_lower_is_better_metric(training_args, argv)
    except UsageError:
        raise
    except ValueError as error:
        raise usage_error(error) from None
    return model_args, data_args, finetune_args, training_args


def minimise_lower_is_better_metric(training_args: TrainingArguments, argv: list[str]) -> TrainingArguments:
    """`--metric_for_best_model mse` (a metric where lower is better) without `--greater_is_better`: a copy that
    minimises it. The Trainer alone would maximise it: it minimises only names ending in "loss"."""
    metric = training_args.metric_for_best_model
    told = "greater_is_better" in given_flags(argv)
    if metric is None or told or metric.removeprefix("eval_") not in LOWER_IS_BETTER:
        return training_args
    return dataclasses.replace(training_args, greater_is_better=False)


def with_best_model_metric(training_args: TrainingArguments, metric: str, greater_is_better: bool) -> TrainingArguments:
    """A copy of `training_args` that tracks `metric` for the best model, unless the user chose one already."""
    if training_args.metric_for_best_model is not None:
        return training_args
    return dataclasses.replace(training_args, metric_for_best_model=metric, greater_is_better=greater_is_better)
