"""Load prepared pretraining data, and convert its shard-based "epochs" into optimizer steps."""

from __future__ import annotations

import math
import os

from datasets import Dataset, load_from_disk

from budget_bert.data.metadata import METADATA_NAME, PreparedDataMetadata


def load_prepared_metadata(path: str | os.PathLike) -> PreparedDataMetadata:
    """The metadata of what `prepare_data.py --output_dir PATH` wrote: a small JSON file, read without the data.

    Raises:
        ValueError: one line naming `--dataset_path` and the fix, for a missing folder, a folder that is not
            prepared data, or data with no training examples.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"--dataset_path {path}: no such folder; prepare it with prepare_data.py --output_dir {path}")
    if not os.path.isfile(os.path.join(path, METADATA_NAME)):
        raise ValueError(
            f"--dataset_path {path} is not prepared data (no {METADATA_NAME}); prepare it with "
            f"prepare_data.py --output_dir {path}"
        )
    try:
        metadata = PreparedDataMetadata.from_json_file(os.path.join(path, METADATA_NAME))
    except ValueError as err:
        raise ValueError(f"--dataset_path {path}: unreadable prepared data ({err}); prepare it again") from err
    if metadata.train_examples == 0:
        raise ValueError(f"--dataset_path {path} holds no training examples; prepare it again from non-empty text")
    return metadata


def load_prepared_dataset(path: str | os.PathLike) -> tuple[Dataset, Dataset | None, PreparedDataMetadata]:
    """Load what `prepare_data.py --output_dir PATH` wrote, memory-mapped from its Arrow shards.

    The training split concatenates all shards in order (the Trainer's sampler shuffles it); the tokenizer that
    encoded it is in `PATH/tokenizer`.

    Returns:
        `(train, validation, metadata)`; `validation` is `None` when the data was prepared without one.

    Raises:
        ValueError: one line naming `--dataset_path` and the fix (see `load_prepared_metadata`), also for shards
            that do not match the metadata.
    """
    metadata = load_prepared_metadata(path)
    path = os.fspath(path)
    try:
        splits = load_from_disk(path)
    except (OSError, ValueError, IndexError) as err:  # datasets raises IndexError for a split with no shard
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"--dataset_path {path}: unreadable prepared data ({reason}); prepare it again") from err
    if "train" not in splits or len(splits["train"]) != metadata.train_examples:
        raise ValueError(
            f"--dataset_path {path}: {len(splits.get('train', []))} training examples where {METADATA_NAME} says "
            f"{metadata.train_examples}; the folder was changed after preparation, prepare it again"
        )
    return splits["train"], splits.get("validation"), metadata


def steps_per_shard(examples_per_shard: int, global_batch_size: int) -> int:
    """Optimizer steps that consume one shard of training examples: the pretraining "epoch".

    academic-budget-bert counts `validation_epochs` and `num_epochs_between_checkpoints` in epochs, and its epoch
    is one shard of the prepared data, not a pass over the whole corpus. With the Trainer sampling from all
    shards at once, one such epoch is this many steps (rounded up, at least one), where `global_batch_size` is
    `per_device_train_batch_size * gradient_accumulation_steps * world_size` and `examples_per_shard` is
    `PreparedDataMetadata.examples_per_shard`.
    """
    if examples_per_shard < 1 or global_batch_size < 1:
        raise ValueError(
            f"steps_per_shard needs positive sizes, got examples_per_shard={examples_per_shard} and "
            f"global_batch_size={global_batch_size}"
        )
    return math.ceil(examples_per_shard / global_batch_size)
