"""Tests of budget_bert.data.tokenization: an offline WordPiece tokenizer that AutoTokenizer loads."""

import pytest
from transformers import AutoTokenizer

from budget_bert.data.tokenization import SPECIAL_TOKENS, train_wordpiece_tokenizer


TEXT = (
    "Return the number of items in a container.\n"
    "Tokenizers split words into pieces; unusual words become several pieces.\n"
    "The quick brown fox jumps over the lazy dog near the riverbank.\n"
) * 20


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_trained_tokenizer_loads_with_auto_tokenizer(text_file, tmp_path):
    trained = train_wordpiece_tokenizer([text_file], vocab_size=300, out_dir=tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")

    assert loaded.get_vocab() == trained.get_vocab()
    assert len(loaded) <= 300
    assert [loaded.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert (loaded.pad_token, loaded.cls_token, loaded.sep_token, loaded.mask_token) == (
        "[PAD]", "[CLS]", "[SEP]", "[MASK]"
    )
    tokens = loaded.convert_ids_to_tokens(loaded("The QUICK fox")["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert tokens[1:-1] == ["the", "quick", "fox"]
    assert loaded.unk_token_id not in loaded("riverbank containers")["input_ids"]
    assert any(token.startswith("##") for token in loaded.tokenize("riverbank containers"))


def test_cased_tokenizer_keeps_case(text_file, tmp_path):
    tokenizer = train_wordpiece_tokenizer([text_file], vocab_size=150, out_dir=tmp_path / "tok", lowercase=False)
    assert tokenizer.tokenize("The")[0] == "The"
    assert AutoTokenizer.from_pretrained(tmp_path / "tok").tokenize("The")[0] == "The"


def test_bad_inputs(tmp_path, text_file):
    with pytest.raises(ValueError, match="missing"):
        train_wordpiece_tokenizer([tmp_path / "absent.txt"], vocab_size=100, out_dir=tmp_path / "tok")
    with pytest.raises(ValueError, match="vocab_size must exceed"):
        train_wordpiece_tokenizer([text_file], vocab_size=5, out_dir=tmp_path / "tok")
