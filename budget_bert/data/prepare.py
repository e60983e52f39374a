"""Tokenize raw text and pack it into BERT pretraining examples, kept in the datasets cache or written as shards.

Everything goes through datasets' on-disk Arrow files (`load_dataset` + batched `map` with cache files), so a corpus
larger than memory only ever has one batch of documents in Python at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import pyarrow.compute as pc
import tokenizers
import transformers
from datasets import DatasetDict, Features, Value, load_dataset, load_from_disk
from transformers import PreTrainedTokenizerBase
from transformers.utils import logging

from budget_bert.data.data_arguments import PrepareDataArguments, TextDataArguments
from budget_bert.data.metadata import METADATA_NAME, TOKENIZER_DIR, PreparedDataMetadata
from budget_bert.data.packing import pack_documents
from budget_bert.data.tokenization import check_tokenizer, load_tokenizer


logger = logging.get_logger(__name__)

DEFAULT_VALIDATION_PROPORTION = 0.01
TEXT_COLUMN = "text"


def resolve_text_files(patterns: Sequence[str], flag: str) -> list[str]:
    """Expand paths, glob patterns and folders (every `*.txt` below them) into a sorted list of files.

    Raises a `ValueError` naming `flag` for an entry that matches no file.
    """
    files: list[str] = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            matches = sorted(str(path) for path in Path(pattern).rglob("*.txt") if path.is_file())
        elif any(char in pattern for char in "*?["):
            matches = sorted(path for path in glob.glob(pattern, recursive=True) if os.path.isfile(path))
        else:
            matches = [pattern] if os.path.isfile(pattern) else []
        if not matches:
            raise ValueError(f"{flag} {pattern}: no such file, and no text file matches it; check the path")
        files.extend(matches)
    return list(dict.fromkeys(files))


def input_ids_dtype(vocab_size: int) -> str:
    """The smallest Arrow integer type that holds every token id: int16 for BERT's 30,522 tokens, else int32."""
    return "int16" if vocab_size <= 2**15 else "int32"


def load_raw_text(args: TextDataArguments) -> DatasetDict:
    """Load the raw documents as a `DatasetDict` with a single `text` column.

    It holds a `train` split and, when `--validation_file` is given or `--dataset_name` has one, a `validation` split.
    """
    validation_files = (
        {"validation": resolve_text_files(args.validation_file, "--validation_file")} if args.validation_file else {}
    )
    if args.train_file:
        train_files = {"train": resolve_text_files(args.train_file, "--train_file")}
        return _load_text_files({**train_files, **validation_files}, args)
    if not args.dataset_name:
        raise ValueError("no training text: pass --train_file FILE... or --dataset_name NAME")

    try:
        loaded = load_dataset(args.dataset_name, args.dataset_config_name, cache_dir=args.dataset_cache_dir)
    except OSError as err:
        reason = str(err).splitlines()[0]
        raise ValueError(
            f"--dataset_name {args.dataset_name}: cannot be loaded ({reason}); offline, pass local text files "
            "with --train_file or a local dataset folder"
        ) from err
    if "train" not in loaded:
        raise ValueError(f"--dataset_name {args.dataset_name} has no 'train' split (it has {sorted(loaded)})")
    splits = ["train"]
    if "validation" in loaded and not validation_files:
        if args.validation_proportion is not None:
            raise ValueError(
                f"--validation_proportion: --dataset_name {args.dataset_name} has its own validation split; "
                "drop --validation_proportion"
            )
        splits.append("validation")
    raw = DatasetDict()
    for split in splits:
        columns = loaded[split].column_names
        if args.text_column not in columns:
            raise ValueError(
                f"--text_column {args.text_column}: not a column of --dataset_name {args.dataset_name} "
                f"(columns: {', '.join(columns)})"
            )
        raw[split] = loaded[split].select_columns([args.text_column])
        if args.text_column != TEXT_COLUMN:
            raw[split] = raw[split].rename_column(args.text_column, TEXT_COLUMN)
    if validation_files:
        raw["validation"] = _load_text_files(validation_files, args)["validation"]
    return raw


def _load_text_files(data_files: dict[str, list[str]], args: TextDataArguments) -> DatasetDict:
    try:
        return load_dataset("text", data_files=data_files, sample_by=args.sample_by, cache_dir=args.dataset_cache_dir)
    except datasets.exceptions.DatasetGenerationError as err:
        # datasets cannot build a split from empty files (nothing to infer its schema from) or undecodable ones.
        flags = "/".join(f"--{split}_file" for split in data_files)
        raise ValueError(
            f"{flags}: no text could be read ({err.__cause__}); check for empty or non-text files"
        ) from err


def _tokenize_and_pack_batch(
    batch: dict[str, list[Any]], tokenizer: PreTrainedTokenizerBase, max_seq_length: int
) -> dict[str, list[list[int]]]:
    texts = [text or "" for text in batch[TEXT_COLUMN]]
    # split_special_tokens: a literal "[SEP]" or "[MASK]" in the corpus is text, not a control token.
    encoded = tokenizer(
        texts,
        add_special_tokens=False,
        split_special_tokens=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    blocks = pack_documents(encoded["input_ids"], max_seq_length, tokenizer.cls_token_id, tokenizer.sep_token_id)
    return {"input_ids": blocks}


def tokenize_and_pack(raw: DatasetDict, tokenizer: PreTrainedTokenizerBase, args: TextDataArguments) -> DatasetDict:
    """Tokenize every split with a batched, cached `map` and pack it with `pack_documents`.

    Each map batch of `--preprocessing_batch_size` documents is packed on its own, so every example is
    `--max_seq_length` tokens long except one shorter tail per batch. The only column is `input_ids`, stored as
    int16 when the vocabulary allows it; the collator derives everything else from it.
    """
    features = Features({"input_ids": datasets.Sequence(Value(input_ids_dtype(len(tokenizer))))})
    return raw.map(
        functools.partial(_tokenize_and_pack_batch, tokenizer=tokenizer, max_seq_length=args.max_seq_length),
        batched=True,
        batch_size=args.preprocessing_batch_size,
        num_proc=args.preprocessing_num_workers,
        remove_columns=[TEXT_COLUMN],
        features=features,
        load_from_cache_file=not args.overwrite_cache,
        desc=f"Tokenizing and packing into {args.max_seq_length}-token examples",
    )


def build_mlm_datasets(args: TextDataArguments, tokenizer: PreTrainedTokenizerBase, seed: int) -> DatasetDict:
    """Load, tokenize and pack the text named by `args`: the one pipeline behind both data paths of run_mlm.py.

    `prepare_data.py` writes its result to disk (`prepare_dataset`); run_mlm.py's `--train_file`/`--dataset_name`
    path uses it directly, from the datasets cache. Without a validation split in the source,
    `--validation_proportion` (default 0.01) of the packed examples is held out, drawn with `seed`.

    Returns:
        A `DatasetDict` with `train` and, unless the proportion is 0, `validation`.
    """
    check_tokenizer(tokenizer)
    packed = tokenize_and_pack(load_raw_text(args), tokenizer, args)
    if len(packed["train"]) == 0:
        raise ValueError("the training text yielded no examples: check --train_file/--dataset_name (empty files?)")
    if "validation" in packed:
        if len(packed["validation"]) == 0:
            raise ValueError("the validation text yielded no examples: check --validation_file (empty files?)")
        return packed
    proportion = DEFAULT_VALIDATION_PROPORTION if args.validation_proportion is None else args.validation_proportion
    if proportion == 0:
        return packed
    if len(packed["train"]) < 2:
        raise ValueError(
            f"the training text yielded {len(packed['train'])} example, too few to hold out a validation split: "
            "add text or pass --validation_proportion 0"
        )
    split = packed["train"].train_test_split(test_size=proportion, seed=seed)
    return DatasetDict(train=split["train"], validation=split["test"])


def prepare_dataset(args: PrepareDataArguments) -> PreparedDataMetadata:
    """Prepare pretraining data in `args.output_dir`: train shards, validation split, tokenizer and metadata.

    Layout: `train/` (`args.num_shards` Arrow shards) and `validation/` as written by `DatasetDict.save_to_disk`,
    `tokenizer/` (the tokenizer that encoded the data) and `metadata.json`, written last so that its presence
    means the folder is complete. Load it with `budget_bert.data.loading.load_prepared_dataset`.
    """
    _clear_output_dir(args.output_dir, args.overwrite_output_dir)
    tokenizer = load_tokenizer(args.tokenizer_name)
    splits = build_mlm_datasets(args, tokenizer, args.seed)
    train_examples = len(splits["train"])
    if train_examples < args.num_shards:
        raise ValueError(
            f"--num_shards {args.num_shards} exceeds the {train_examples} training examples: lower --num_shards "
            "or add text"
        )
    num_shards = {split: args.num_shards if split == "train" else 1 for split in splits}
    splits.save_to_disk(args.output_dir, num_shards=num_shards, num_proc=args.preprocessing_num_workers)
    tokenizer.save_pretrained(os.path.join(args.output_dir, TOKENIZER_DIR))

    saved = load_from_disk(args.output_dir)
    shard_sizes = [
        len(saved["train"].shard(args.num_shards, index, contiguous=True)) for index in range(args.num_shards)
    ]
    metadata = PreparedDataMetadata(
        max_seq_length=args.max_seq_length,
        tokenizer_name=args.tokenizer_name,
        vocab_size=len(tokenizer),
        input_ids_dtype=input_ids_dtype(len(tokenizer)),
        num_shards=args.num_shards,
        examples_per_shard=min(shard_sizes),
        shard_sizes=shard_sizes,
        train_examples=len(saved["train"]),
        train_tokens=pc.sum(pc.list_value_length(saved["train"].data.column("input_ids"))).as_py(),
        validation_examples=len(saved["validation"]) if "validation" in saved else 0,
        arguments=dataclasses.asdict(args),
        versions={
            "python": platform.python_version(),
            "datasets": datasets.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
    )
    metadata.to_json_file(os.path.join(args.output_dir, METADATA_NAME))
    logger.info(
        f"Prepared {metadata.train_examples} training examples ({metadata.train_tokens} tokens) in "
        f"{metadata.num_shards} shards of {metadata.examples_per_shard}+ and {metadata.validation_examples} "
        f"validation examples into {args.output_dir}"
    )
    return metadata


def _clear_output_dir(path: str, overwrite: bool) -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--output_dir {path} is a file: pick a folder")
    if not os.path.isdir(path) or not os.listdir(path):
        return
    if not overwrite:
        raise ValueError(
            f"--output_dir {path} is not empty: pass --overwrite_output_dir to replace the prepared data there, "
            "or pick another folder"
        )
    if not os.path.isfile(os.path.join(path, METADATA_NAME)):
        raise ValueError(
            f"--output_dir {path} holds something other than complete prepared data (no {METADATA_NAME}), which "
            "--overwrite_output_dir does not delete: empty it yourself or pick another folder"
        )
    shutil.rmtree(path)
