"""Pack tokenized documents into BERT pretraining sequences."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def pack_documents(
    documents: Iterable[Sequence[int]], max_seq_length: int, cls_token_id: int, sep_token_id: int
) -> list[list[int]]:
    """Concatenate consecutive documents and cut them into `[CLS] tokens... [SEP]` sequences.

    Like the `group_texts` of transformers' run_mlm.py, documents are joined into one stream and cut into
    blocks, so no position is spent on padding; unlike it, every block gets its own special tokens, as BERT
    expects: the body of a block is `max_seq_length - 2` tokens, wrapped in `[CLS]` ... `[SEP]`, and a `[SEP]`
    marks each boundary between two documents inside the stream. Empty documents are skipped.

    Every block is exactly `max_seq_length` long except the last one, which holds the tail of the stream and is
    shorter (the collator pads it). The tail is kept rather than dropped (run_mlm.py drops it) so that no text is
    lost and a small corpus still yields examples. A document boundary that falls exactly on a block edge leaves
    a `[SEP]` next to the block's own `[CLS]` or `[SEP]`; that is harmless and rare (about one block in
    `max_seq_length`), and avoiding it would need a per-token loop.

    Args:
        documents: token ids of consecutive documents, without special tokens.
        max_seq_length: the length of a full block, special tokens included (at least 3).
        cls_token_id: id of `[CLS]`, the first token of every block.
        sep_token_id: id of `[SEP]`, the last token of every block and the document separator.

    Returns:
        The blocks, in stream order.
    """
    if max_seq_length < 3:
        raise ValueError(f"--max_seq_length must be at least 3 ([CLS] token [SEP]), got {max_seq_length}")
    stream: list[int] = []
    for document in documents:
        if not document:
            continue
        if stream:
            stream.append(sep_token_id)
        stream.extend(document)
    body = max_seq_length - 2
    return [[cls_token_id, *stream[start : start + body], sep_token_id] for start in range(0, len(stream), body)]
