"""The metadata file that marks a folder as prepared pretraining data and describes it."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any


METADATA_NAME = "metadata.json"
TOKENIZER_DIR = "tokenizer"
FORMAT_VERSION = 1


@dataclass
class PreparedDataMetadata:
    """What `prepare_data.py` wrote: sizes, sequence length, tokenizer and the arguments that made it.

    The training split is stored in `num_shards` Arrow shards; `shard_sizes[i]` examples are in shard `i`
    (sizes differ by at most one, the larger ones first) and `examples_per_shard` is the smallest of them. One
    shard is the pretraining "epoch" of the academic-budget-bert flags (`validation_epochs`,
    `num_epochs_between_checkpoints`); see `budget_bert.data.loading.steps_per_shard`. The tokenizer that encoded
    the data is saved beside it, in the `tokenizer/` sub-folder.
    """

    max_seq_length: int
    tokenizer_name: str
    vocab_size: int
    input_ids_dtype: str
    num_shards: int
    examples_per_shard: int
    shard_sizes: list[int]
    train_examples: int
    train_tokens: int
    validation_examples: int
    arguments: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json_file(self, path: str | os.PathLike) -> None:
        """Write the metadata as indented JSON."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(self), f, indent=2, sort_keys=True)
            f.write("\n")

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> PreparedDataMetadata:
        """Read metadata written by `to_json_file`; a `ValueError` for another format version or a broken file."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if data.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {data.get('format_version')}, this code reads {FORMAT_VERSION}")
            return cls(**data)
        except (ValueError, TypeError, AttributeError) as err:
            raise ValueError(f"{os.fspath(path)} is not prepared-data metadata: {err}") from err
