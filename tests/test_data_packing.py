"""Tests of budget_bert.data.packing: BERT-style packing of consecutive documents."""

import random

import pytest

from budget_bert.data.packing import pack_documents


CLS, SEP = 101, 102


def _bodies_to_stream(blocks):
    return [token for block in blocks for token in block[1:-1]]


def test_every_block_is_wrapped_and_full_except_the_tail():
    rng = random.Random(0)
    documents = [[rng.randrange(1000, 2000) for _ in range(rng.randrange(0, 40))] for _ in range(50)]
    blocks = pack_documents(documents, max_seq_length=16, cls_token_id=CLS, sep_token_id=SEP)

    assert all(block[0] == CLS and block[-1] == SEP for block in blocks)
    assert all(len(block) == 16 for block in blocks[:-1])
    assert 3 <= len(blocks[-1]) <= 16


def test_documents_are_kept_in_order_with_a_separator_between_them():
    documents = [[1, 2, 3], [], [4, 5], [6, 7, 8, 9, 10]]
    blocks = pack_documents(documents, max_seq_length=6, cls_token_id=CLS, sep_token_id=SEP)

    assert blocks == [[CLS, 1, 2, 3, SEP, SEP], [CLS, 4, 5, SEP, 6, SEP], [CLS, 7, 8, 9, 10, SEP]]
    assert _bodies_to_stream(blocks) == [1, 2, 3, SEP, 4, 5, SEP, 6, 7, 8, 9, 10]


def test_short_input_gives_one_short_block_and_empty_input_none():
    assert pack_documents([[7, 8]], max_seq_length=128, cls_token_id=CLS, sep_token_id=SEP) == [[CLS, 7, 8, SEP]]
    assert pack_documents([[], []], max_seq_length=128, cls_token_id=CLS, sep_token_id=SEP) == []


def test_a_document_longer_than_a_block_is_split_across_blocks():
    document = list(range(1, 26))
    blocks = pack_documents([document], max_seq_length=12, cls_token_id=CLS, sep_token_id=SEP)

    assert [len(block) for block in blocks] == [12, 12, 7]
    assert _bodies_to_stream(blocks) == document


def test_too_short_max_seq_length_names_the_flag():
    with pytest.raises(ValueError, match="--max_seq_length"):
        pack_documents([[1]], max_seq_length=2, cls_token_id=CLS, sep_token_id=SEP)
