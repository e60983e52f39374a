"""Tokenizers for BERT pretraining: loading one (with a one-line error), checking it has BERT's special tokens, and
training a WordPiece vocabulary offline, in seconds, with the `tokenizers` library."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer
from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerBase
from transformers.utils import logging


logger = logging.get_logger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def load_tokenizer(name: str, flag: str = "--tokenizer_name", **kwargs: Any) -> PreTrainedTokenizerBase:
    """
    `AutoTokenizer.from_pretrained(name, **kwargs)`, with a failure turned into a one-line `ValueError` that names
    `flag`, the command-line flag `name` came from.
    """
    try:
        return AutoTokenizer.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:
        reason = str(err).splitlines()[0]
        raise ValueError(
            f"{flag} {name}: cannot be loaded ({reason}); offline, pass a local tokenizer folder "
            "(budget_bert.data.tokenization.train_wordpiece_tokenizer makes one)"
        ) from err


def check_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise a `ValueError` unless the tokenizer has the [CLS], [SEP], [PAD] and [MASK] tokens BERT needs."""
    needed = ("cls_token", "sep_token", "pad_token", "mask_token")
    missing = [name for name in needed if getattr(tokenizer, name) is None]
    if missing:
        raise ValueError(
            f"--tokenizer_name {tokenizer.name_or_path}: has no {', '.join(missing)}; BERT pretraining needs a "
            "tokenizer with [CLS], [SEP], [PAD] and [MASK]"
        )


def train_wordpiece_tokenizer(
    files: Sequence[str | os.PathLike],
    vocab_size: int,
    out_dir: str | os.PathLike,
    lowercase: bool = True,
    min_frequency: int = 2,
    model_max_length: int = 512,
) -> BertTokenizerFast:
    """Train a BERT-style WordPiece vocabulary on text files and save it as a `BertTokenizerFast` folder.

    The pipeline is BERT's: `BertNormalizer` (lower-casing and accent stripping when `lowercase`),
    `BertPreTokenizer`, WordPiece with the `##` continuation prefix, and the special tokens
    `[PAD] [UNK] [CLS] [SEP] [MASK]` at ids 0-4. The folder loads with `AutoTokenizer.from_pretrained(out_dir)`.

    Args:
        files: plain-text files to learn the vocabulary from.
        vocab_size: size of the vocabulary, special tokens and single characters included.
        out_dir: folder to write (`tokenizer.json`, `tokenizer_config.json`, ...).
        lowercase: lower-case (and strip accents from) the text, as the uncased BERT models do.
        min_frequency: the fewest occurrences a merge needs to enter the vocabulary.
        model_max_length: the longest sequence the tokenizer declares its model accepts.

    Returns:
        The trained tokenizer, as saved in `out_dir`.
    """
    files = [os.fspath(path) for path in files]
    missing = [path for path in files if not os.path.isfile(path)]
    if not files or missing:
        raise ValueError(
            f"train_wordpiece_tokenizer needs existing text files; missing: {missing or 'no files given'}"
        )
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")

    backend = Tokenizer(WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    backend.train(files, trainer)

    # BertTokenizerFast rebuilds BERT's normalizer, pre-tokenizer, decoder and [CLS]/[SEP] template around the
    # learned vocabulary, so the saved folder is an ordinary BERT tokenizer.
    tokenizer = BertTokenizerFast(
        vocab=backend.get_vocab(), do_lower_case=lowercase, model_max_length=model_max_length
    )
    tokenizer.save_pretrained(out_dir)
    logger.info(f"Trained a WordPiece vocabulary of {len(tokenizer)} tokens on {len(files)} file(s) into {out_dir}")
    return tokenizer
