"""Tokenize raw text and pack it into BERT pretraining examples, kept in the datasets cache or written as shards.

Everything goes through datasets' on-disk Arrow files (`load_dataset` + batched `map` with cache files), so a corpus
larger than memory only ever has one batch of documents in Python at a time.
"""

from __future__ import annotations

import codecs
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
        for split, files in data_files.items():
            for path in files:
                problem = _unreadable_text(path)
                if problem is not None:
                    raise ValueError(f"--{split}_file {path}: {problem}")
        flags = "/".join(f"--{split}_file" for split in data_files)
        raise ValueError(
            f"{flags}: no text could be read ({err.__cause__}); check for empty or non-text files"
        ) from err


def _unreadable_text(path: str) -> str | None:
    """Why the text loader cannot read `path` (empty, or not UTF-8) and the fix, or `None`; read a MB at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    position = 0
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(2**20), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                return f"not UTF-8 text ({error.reason} at byte {position + error.start}): convert it, or leave it out"
            position += len(chunk)
    return "empty: leave it out" if position == 0 else None


# Fast tokenizers take about 130 bytes per character of a single long text (1.3 GB for a 10 MB line without a
# newline), and about a tenth of that for the same text in pieces: documents are tokenized in pieces of this size.
MAX_PIECE_CHARS = 100_000
_WHITESPACE = " \n\t\r\f\v"


def split_long_text(text: str, max_chars: int = MAX_PIECE_CHARS) -> list[str]:
    """Cut `text` into pieces of at most `max_chars` characters, each before a whitespace character.

    Tokenizers split words at whitespace first, so the pieces tokenize to the same ids as the whole text (the
    whitespace stays at the start of the next piece, where byte-level BPE needs it). A stretch of `max_chars`
    characters without any ASCII whitespace is cut where it reaches the limit.
    """
    pieces, start = [], 0
    while len(text) - start > max_chars:
        cut = max(text.rfind(char, start + 1, start + max_chars + 1) for char in _WHITESPACE)
        if cut <= start:
            cut = start + max_chars
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _tokenize_and_pack_batch(
    batch: dict[str, list[Any]], tokenizer: PreTrainedTokenizerBase, max_seq_length: int
) -> dict[str, list[list[int]]]:
    pieces, owners = [], []
    for index, text in enumerate(batch[TEXT_COLUMN]):
        for piece in split_long_text(text or "", MAX_PIECE_CHARS):
            pieces.append(piece)
            owners.append(index)
    # split_special_tokens: a literal "[SEP]" or "[MASK]" in the corpus is text, not a control token.
    encoded = tokenizer(
        pieces,
        add_special_tokens=False,
        split_special_tokens=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    documents: list[list[int]] = [[] for _ in batch[TEXT_COLUMN]]
    for index, ids in zip(owners, encoded["input_ids"]):
        documents[index].extend(ids)
    blocks = pack_documents(documents, max_seq_length, tokenizer.cls_token_id, tokenizer.sep_token_id)
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

    Everything is written to a staging folder next to `args.output_dir` (`.NAME.preparing`), which takes the
    output's place only once complete: a failed or killed preparation leaves the previous data as it was, and
    its rerun starts over. `--overwrite_output_dir` replaces only a folder that holds prepared data and nothing
    else.
    """
    output = Path(args.output_dir)
    _recover_interrupted_replacement(output)
    _check_output_dir(output, args.overwrite_output_dir, _input_files(args))
    tokenizer = load_tokenizer(args.tokenizer_name)
    splits = build_mlm_datasets(args, tokenizer, args.seed)
    train_examples = len(splits["train"])
    if train_examples < args.num_shards:
        raise ValueError(
            f"--num_shards {args.num_shards} exceeds the {train_examples} training examples: lower --num_shards "
            "or add text"
        )
    staging = _staging_dir(output)
    try:
        metadata = _write_prepared(splits, tokenizer, args, staging)
        _replace_dir(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info(
        f"Prepared {metadata.train_examples} training examples ({metadata.train_tokens} tokens) in "
        f"{metadata.num_shards} shards of {metadata.examples_per_shard}+ and {metadata.validation_examples} "
        f"validation examples into {args.output_dir}"
    )
    return metadata


def _write_prepared(
    splits: DatasetDict, tokenizer: PreTrainedTokenizerBase, args: PrepareDataArguments, folder: Path
) -> PreparedDataMetadata:
    num_shards = {split: args.num_shards if split == "train" else 1 for split in splits}
    splits.save_to_disk(str(folder), num_shards=num_shards, num_proc=args.preprocessing_num_workers)
    tokenizer.save_pretrained(folder / TOKENIZER_DIR)

    saved = load_from_disk(str(folder))
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
    metadata.to_json_file(folder / METADATA_NAME)
    return metadata


def _staging_dir(output: Path) -> Path:
    """Where the new data is written before it replaces `output`: next to it, on the same file system."""
    output = output.absolute()
    return output.parent / f".{output.name}.preparing"


def _retired_dir(output: Path) -> Path:
    """Where the previous data waits, between the two renames that replace it, before it is deleted."""
    output = output.absolute()
    return output.parent / f".{output.name}.replaced"


def _replace_dir(staging: Path, output: Path) -> None:
    """Put the complete `staging` folder in the place of `output`, which may exist (its data is then deleted)."""
    if not output.exists():
        os.replace(staging, output)
        return
    retired = _retired_dir(output)
    os.replace(output, retired)
    os.replace(staging, output)
    shutil.rmtree(retired)


def _recover_interrupted_replacement(output: Path) -> None:
    """Undo what a preparation killed before it finished left next to `output` (see `_replace_dir`)."""
    retired = _retired_dir(output)
    if retired.is_dir():
        if output.exists():  # killed after the new data was in place: the old one was going anyway
            shutil.rmtree(retired)
        else:  # killed between the two renames: the previous data goes back, as if nothing had started
            os.replace(retired, output)
            logger.warning(f"Restored {output}, which a killed preparation had moved to {retired}.")
    shutil.rmtree(_staging_dir(output), ignore_errors=True)


def _input_files(args: TextDataArguments) -> list[str]:
    files = resolve_text_files(args.train_file, "--train_file") if args.train_file else []
    return files + (resolve_text_files(args.validation_file, "--validation_file") if args.validation_file else [])


# What `_write_prepared` puts in a folder: `save_to_disk`'s `dataset_dict.json` and split folders, the rest.
_PREPARED_ENTRIES = frozenset({"dataset_dict.json", "train", "validation", TOKENIZER_DIR, METADATA_NAME})


def _check_output_dir(output: Path, overwrite: bool, input_files: Sequence[str]) -> None:
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output_dir {output} is a file: pick a folder")
    if not output.is_dir() or not any(output.iterdir()):
        return
    if not overwrite:
        raise ValueError(
            f"--output_dir {output} is not empty: pass --overwrite_output_dir to replace the prepared data there, "
            "or pick another folder"
        )
    inside = [path for path in input_files if output.resolve() in Path(path).resolve().parents]
    if inside:
        raise ValueError(
            f"--train_file/--validation_file {inside[0]} is inside --output_dir {output}, which "
            "--overwrite_output_dir replaces: move the text out of that folder, or pick another --output_dir"
        )
    others = sorted(entry.name for entry in output.iterdir() if entry.name not in _PREPARED_ENTRIES)
    if others or not (output / METADATA_NAME).is_file():
        found = f"it also holds {', '.join(others[:3])}{' ...' if len(others) > 3 else ''}" if others else (
            f"no {METADATA_NAME}"
        )
        raise ValueError(
            f"--output_dir {output} holds something other than complete prepared data ({found}), which "
            "--overwrite_output_dir does not delete: empty it yourself or pick another folder"
        )
