"""Argument dataclasses for the pretraining data (parsed with `HfArgumentParser`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from budget_bert.cli import CheckedArguments


@dataclass
class TextDataArguments(CheckedArguments):
    """Where the raw text comes from and how it is tokenized and packed.

    Shared by `prepare_data.py` (which writes the result to disk) and by run_mlm.py's on-the-fly path (which keeps
    it in the datasets cache): both call `budget_bert.data.prepare.build_mlm_datasets`.
    """

    train_file: list[str] | None = field(
        default=None,
        metadata={
            "help": "Raw text files for training: paths, glob patterns (quote them) or folders (every *.txt below "
            "them). Documents are separated as --sample_by says."
        },
    )
    validation_file: list[str] | None = field(
        default=None,
        metadata={"help": "Raw text files for validation (paths, globs or folders), instead of holding out a part."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A dataset on the Hub (e.g. wikitext) or a local dataset folder, loaded with "
            "datasets.load_dataset, instead of --train_file. Its 'validation' split is used when it has one."
        },
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The configuration of --dataset_name (e.g. wikitext-103-raw-v1)."}
    )
    text_column: str = field(
        default="text", metadata={"help": "The column of --dataset_name that holds the text."}
    )
    sample_by: Literal["line", "paragraph", "document"] = field(
        default="paragraph",
        metadata={
            "help": "What one document is in --train_file/--validation_file: a paragraph (blocks separated by a "
            "blank line, BERT's corpus convention), a line, or a whole file."
        },
    )
    validation_proportion: float | None = field(
        default=None,
        metadata={
            "help": "Share of the packed examples held out for validation when no validation split is given "
            "(default 0.01 then; 0 for none). Drawn with the seed, so the split is reproducible."
        },
    )
    max_seq_length: int = field(
        default=128,
        metadata={"help": "Length of a packed example, [CLS] and [SEP] included."},
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes that tokenize and pack in parallel (datasets' num_proc)."}
    )
    preprocessing_batch_size: int = field(
        default=1000,
        metadata={
            "help": "Documents tokenized and packed together; each such batch leaves one shorter tail example."
        },
    )
    overwrite_cache: bool = field(
        default=False, metadata={"help": "Recompute the tokenized and packed data instead of reusing the cache."}
    )
    dataset_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where datasets keeps its on-disk Arrow cache (raw text, tokenized data); defaults to "
            "HF_DATASETS_CACHE. Pick a disk with room for about twice the corpus."
        },
    )

    def problems(self) -> list[str]:
        """Every inconsistency in these arguments, each naming its flag and the fix (empty when valid)."""
        problems = []
        if self.train_file and self.dataset_name:
            problems.append("--train_file and --dataset_name are two sources of training text: pass only one")
        if self.dataset_config_name and not self.dataset_name:
            problems.append("--dataset_config_name needs --dataset_name")
        if self.validation_proportion is not None:
            if not 0.0 <= self.validation_proportion < 1.0:
                problems.append(f"--validation_proportion must be in [0, 1), got {self.validation_proportion}")
            if self.validation_file:
                problems.append("--validation_proportion and --validation_file both set the validation data: pass one")
        if self.max_seq_length < 3:
            problems.append(f"--max_seq_length must be at least 3 ([CLS] token [SEP]), got {self.max_seq_length}")
        if self.preprocessing_num_workers is not None and self.preprocessing_num_workers < 1:
            problems.append(
                f"--preprocessing_num_workers must be a positive integer, got {self.preprocessing_num_workers}"
            )
        if self.preprocessing_batch_size < 1:
            problems.append(
                f"--preprocessing_batch_size must be a positive integer, got {self.preprocessing_batch_size}"
            )
        return problems

    @property
    def has_source(self) -> bool:
        """Whether training text is named (--train_file or --dataset_name)."""
        return bool(self.train_file or self.dataset_name)


@dataclass(kw_only=True)
class PrepareDataArguments(TextDataArguments):
    """Arguments of `prepare_data.py`: the text, the tokenizer, and how the prepared data is written."""

    tokenizer_name: str = field(
        metadata={"help": "Tokenizer to encode with: a Hub name (e.g. bert-base-uncased) or a local folder."}
    )
    output_dir: str = field(
        metadata={"help": "Folder for the prepared data (train shards, validation split, metadata.json, tokenizer)."}
    )
    num_shards: int = field(
        default=8,
        metadata={
            "help": "Number of training shards. One shard is the pretraining 'epoch' that validation and "
            "checkpoint intervals count in."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed of the validation hold-out."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace prepared data already in --output_dir."}
    )

    def problems(self) -> list[str]:
        """Every inconsistency in these arguments, each naming its flag and the fix (empty when valid)."""
        problems = super().problems()
        if not self.has_source:
            problems.append("no training text: pass --train_file FILE... or --dataset_name NAME")
        if self.num_shards < 1:
            problems.append(f"--num_shards must be a positive integer, got {self.num_shards}")
        return problems
