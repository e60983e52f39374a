"""GLUE data for run_glue.py: load (Hub or local files), check the columns, infer the labels, tokenize.

Split names follow `nyu-mll/glue`: `train`, `validation` (MNLI: `validation_matched` and
`validation_mismatched`) and `test` (MNLI: `test_matched`, `test_mismatched`); local files are loaded under the
same names, so the rest of the pipeline does not care where the data came from.

Without a GLUE task, local files follow HuggingFace run_glue's conventions: the label column is `label`
(floats mean regression); the texts are `sentence1`/`sentence2` when present, otherwise the first two other
columns, otherwise the only one (`idx` is never a text).
"""

from dataclasses import dataclass

from datasets import ClassLabel, Dataset, DatasetDict, load_dataset
from datasets.exceptions import DatasetGenerationError
from transformers import PreTrainedTokenizerBase
from transformers.utils import logging

from budget_bert.glue.glue_arguments import DATA_EXTENSIONS, DataArguments
from budget_bert.glue.tasks import HUB_DATASET, GlueTask

logger = logging.get_logger(__name__)

LABEL_COLUMN = "label"
TARGET_COLUMN = "labels"  # the tokenized label ids (or regression targets), under the models' argument name


@dataclass(frozen=True)
class LabelSpec:
    """What the model predicts.

    Args:
        is_regression: a single real number per example (STS-B, or float labels in local files).
        names: class names in label-id order (`None` for regression); what `config.id2label` shows.
        to_id: maps each label value found in the data to its id (`None` for regression).
    """

    is_regression: bool
    names: tuple[str, ...] | None
    to_id: dict | None

    @property
    def num_labels(self) -> int:
        """Size of the classification head: 1 for regression."""
        return 1 if self.names is None else len(self.names)


def eval_splits(task: GlueTask | None) -> tuple[tuple[str, str], ...]:
    """The `(split, metric suffix)` validation sets: the task's, or the one `validation` split of local data."""
    return task.eval_splits if task else (("validation", ""),)


def test_splits(task: GlueTask | None) -> tuple[tuple[str, str], ...]:
    """The `(split, file suffix)` test sets: the task's, or the one `test` split of local data."""
    return task.test_splits if task else (("test", ""),)


def split_names(task: GlueTask | None) -> dict[str, str]:
    """Map each local-file flag (`train`, `validation`, `validation_mismatched`, `test`) to its split name."""
    validation = [split for split, _ in eval_splits(task)]
    names = {"train": "train", "validation": validation[0], "test": test_splits(task)[0][0]}
    if len(validation) > 1:
        names["validation_mismatched"] = validation[1]
    return names


def load_raw_datasets(data_args: DataArguments, task: GlueTask | None, cache_dir: str | None = None) -> DatasetDict:
    """Load the local files if any were given, else the task's GLUE data from the Hub.

    An unreachable Hub (offline machine, `HF_HUB_OFFLINE=1`) is a `ConnectionError` that says how to use local
    files instead.
    """
    if data_args.data_files:
        names = split_names(task)
        files = {names[flag]: path for flag, path in data_args.data_files.items()}
        builder = DATA_EXTENSIONS[next(iter(files.values())).rsplit(".", 1)[-1]]
        try:
            return load_dataset(builder, data_files=files, cache_dir=cache_dir)
        except (DatasetGenerationError, ValueError) as error:
            raise ValueError(_unreadable_files(builder, data_args.data_files, cache_dir, error)) from None
    try:
        return load_dataset(HUB_DATASET, task.name, cache_dir=cache_dir)
    except (ConnectionError, OSError) as error:
        raise ConnectionError(
            f"Could not load GLUE task {task.name!r} from the Hub ({HUB_DATASET}): {error}. On a machine without "
            "Hub access pass local files instead: --train_file, --validation_file (and --test_file) with the "
            f"task's columns {[column for column in task.text_columns if column]} and {LABEL_COLUMN!r}."
        ) from error


def _unreadable_files(builder: str, data_files: dict[str, str], cache_dir: str | None, error: Exception) -> str:
    """Which of the local files `datasets` could not build a data set from (`error`), and why, naming its flag."""
    columns = {}
    for flag, path in data_files.items():
        try:
            columns[flag] = load_dataset(builder, data_files={"train": path}, cache_dir=cache_dir)["train"].column_names
        except (DatasetGenerationError, ValueError) as file_error:
            reason = _reason(file_error)
            return f"--{flag}_file {path}: cannot be read as {builder} ({reason}); give a file with a header and rows"
    if len({tuple(names) for names in columns.values()}) > 1:
        listed = ", ".join(f"--{flag}_file {data_files[flag]} has {names}" for flag, names in columns.items())
        return f"The local files have different columns ({listed}): give every file the same columns"
    return _reason(error)


def _reason(error: Exception) -> str:
    cause = error.__cause__ or error
    text = str(cause)
    # datasets' words for a csv or json file with a header (or keys) but no rows, alone or next to other files.
    if "corresponds to no data" in text or "its type in this file is null" in text:
        return "it has a header but no rows"
    if type(cause).__name__ == "EmptyDataError":
        return "the file is empty"
    return text.splitlines()[0] if text else type(cause).__name__


def text_columns(raw: DatasetDict, task: GlueTask | None) -> tuple[str, str | None]:
    """The (first, second-or-None) text columns: the task's, or inferred from the first split's columns."""
    if task is not None:
        return task.text_columns
    columns = [name for name in next(iter(raw.values())).column_names if name not in (LABEL_COLUMN, "idx")]
    if "sentence1" in columns and "sentence2" in columns:
        return "sentence1", "sentence2"
    if not columns:
        raise ValueError(f"The data has no text column, only {next(iter(raw.values())).column_names}.")
    return columns[0], columns[1] if len(columns) > 1 else None


def check_columns(
    raw: DatasetDict, columns: tuple[str, str | None], data_args: DataArguments, task: GlueTask | None
) -> None:
    """`ValueError` naming each split (and its file) that lacks a text column, or `label` outside the test set."""
    names = split_names(task)
    files = {names[flag]: f"--{flag}_file {path}" for flag, path in data_args.data_files.items()}
    problems = []
    for split, dataset in raw.items():
        needed = [column for column in columns if column]
        if not is_test_split(split):
            needed.append(LABEL_COLUMN)
        missing = [column for column in needed if column not in dataset.column_names]
        if missing:
            source = files.get(split) or split
            problems.append(f"{source}: missing column(s) {missing}; it has {dataset.column_names}.")
    if problems:
        raise ValueError("The data does not have the columns the task needs:\n- " + "\n- ".join(problems))


def infer_labels(raw: DatasetDict, task: GlueTask | None) -> LabelSpec:
    """Work out regression vs classification, the class names and the value -> id map.

    GLUE tasks use their own names; labels in local files may be those names or the ids. Without a task the
    classes are the sorted distinct labels of the training (or first labelled) split, as in HuggingFace run_glue.
    """
    labelled = {
        split: dataset for split, dataset in raw.items()
        if LABEL_COLUMN in dataset.column_names and not is_test_split(split)
    }
    if task is not None:
        if task.is_regression:
            return LabelSpec(True, None, None)
        names = task.label_names
        to_id = {**{name: index for index, name in enumerate(names)}, **{index: index for index in range(len(names))}}
    elif not labelled:
        raise ValueError(f"Without --task_name the data needs a {LABEL_COLUMN!r} column to tell the classes.")
    else:
        reference = labelled["train"] if "train" in labelled else next(iter(labelled.values()))
        feature = reference.features[LABEL_COLUMN]
        if isinstance(feature, ClassLabel):
            names = tuple(feature.names)
            to_id = {index: index for index in range(len(names))}
        elif feature.dtype.startswith("float"):
            return LabelSpec(True, None, None)
        else:
            values = sorted(set(reference[LABEL_COLUMN]))
            names = tuple(str(value) for value in values)
            to_id = {value: index for index, value in enumerate(values)}
    _check_known_labels(labelled, to_id)
    return LabelSpec(False, names, to_id)


def is_test_split(split: str) -> bool:
    """Whether `split` is a test set, whose labels (-1 in GLUE, or none in local files) are never used."""
    return split.startswith("test")


def _check_known_labels(labelled: dict[str, Dataset], to_id: dict) -> None:
    known = sorted({str(key) for key in to_id})
    problems = []
    for split, dataset in labelled.items():
        unknown = sorted({str(value) for value in dataset.unique(LABEL_COLUMN)} - {str(key) for key in to_id})
        if unknown:
            problems.append(f"{split}: labels {unknown} are outside the task's label set {known}")
    if problems:
        raise ValueError("Labels outside the task's label set:\n- " + "\n- ".join(problems))


def tokenize(
    raw: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    columns: tuple[str, str | None],
    labels: LabelSpec,
    data_args: DataArguments,
) -> DatasetDict:
    """Tokenize the text column(s); labels become `labels`: ids, or floats for regression (test sets get none)."""
    if data_args.max_seq_length > tokenizer.model_max_length:
        logger.warning(
            f"--max_seq_length {data_args.max_seq_length} is longer than the tokenizer's model_max_length "
            f"({tokenizer.model_max_length}); using {tokenizer.model_max_length}."
        )
    max_length = min(data_args.max_seq_length, tokenizer.model_max_length)
    padding = "max_length" if data_args.pad_to_max_length else False
    first, second = columns

    def encode(batch, labelled: bool):
        texts = (batch[first],) if second is None else (batch[first], batch[second])
        encoded = tokenizer(*texts, padding=padding, max_length=max_length, truncation=True)
        if labelled:
            encoded[TARGET_COLUMN] = [
                float(value) if labels.is_regression else labels.to_id[value]
                for value in batch[LABEL_COLUMN]
            ]
        return encoded

    # The ids go to a new column: datasets keeps the type of a column a map writes over (strings, say).
    return DatasetDict({
        split: dataset.map(
            encode,
            batched=True,
            fn_kwargs={"labelled": LABEL_COLUMN in dataset.column_names and not is_test_split(split)},
            remove_columns=[LABEL_COLUMN] if LABEL_COLUMN in dataset.column_names else None,
            load_from_cache_file=not data_args.overwrite_cache,
            desc=f"Tokenizing {split}",
        )
        for split, dataset in raw.items()
    })
