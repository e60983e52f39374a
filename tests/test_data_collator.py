"""Tests of budget_bert.data.collator: BERT masking rates, the per-sequence cap, and special tokens."""

import pytest
import torch
from transformers import BertTokenizerFast, DataCollatorForLanguageModeling

from budget_bert.data.collator import DataCollatorForBertPretraining


SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, UNK, CLS, SEP, MASK = range(5)
VOCAB = 200
SEQ_LEN = 64


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {token: index for index, token in enumerate(SPECIALS + [f"w{i}" for i in range(VOCAB - len(SPECIALS))])}
    return BertTokenizerFast(vocab=vocab)


def _examples(count, length=SEQ_LEN, seed=0):
    """Packed examples: [CLS] words [SEP] words [SEP], with a document separator in the middle."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(count):
        words = torch.randint(len(SPECIALS), VOCAB, (length - 3,), generator=generator).tolist()
        middle = len(words) // 2
        examples.append({"input_ids": [CLS, *words[:middle], SEP, *words[middle:], SEP]})
    return examples


def _masking(batch, examples):
    original = torch.tensor([example["input_ids"] for example in examples])
    return original, batch["labels"] != -100


def test_masking_rate_and_80_10_10_split(tokenizer):
    examples = _examples(256)
    batch = DataCollatorForBertPretraining(tokenizer, seed=0)(examples)
    original, masked = _masking(batch, examples)
    candidates = ~torch.isin(original, torch.tensor([CLS, SEP]))

    assert masked.sum() / candidates.sum() == pytest.approx(0.15, abs=0.01)
    inputs = batch["input_ids"][masked]
    as_mask = (inputs == MASK).float().mean()
    unchanged = (inputs == original[masked]).float().mean()
    assert as_mask == pytest.approx(0.8, abs=0.02)
    assert unchanged == pytest.approx(0.1 + 0.1 / VOCAB, abs=0.015)
    assert 1 - as_mask - unchanged == pytest.approx(0.1, abs=0.015)
    assert torch.equal(batch["labels"][masked], original[masked])
    assert torch.equal(batch["input_ids"][~masked], original[~masked])


def test_special_tokens_and_padding_are_never_masked(tokenizer):
    examples = _examples(64) + [{"input_ids": [CLS, 10, 11, SEP]}]
    batch = DataCollatorForBertPretraining(tokenizer, mlm_probability=0.9, seed=1)(examples)
    original = batch["input_ids"].new_tensor(
        [example["input_ids"] + [PAD] * (SEQ_LEN - len(example["input_ids"])) for example in examples]
    )
    special = torch.isin(original, torch.tensor([PAD, CLS, SEP]))

    assert (batch["labels"][special] == -100).all()
    assert torch.equal(batch["input_ids"][special], original[special])
    assert batch["attention_mask"][-1].tolist() == [1] * 4 + [0] * (SEQ_LEN - 4)
    assert (batch["labels"][:, 1:-1] != -100).float().mean() > 0.8


def test_a_batch_without_padding_has_no_attention_mask_and_the_same_loss(tokenizer):
    from modeling_fixtures import tiny_config

    from budget_bert import BudgetBertForMaskedLM

    examples = _examples(4)
    batch = DataCollatorForBertPretraining(tokenizer, seed=0)(examples)
    assert "attention_mask" not in batch and batch["input_ids"].shape == (4, SEQ_LEN)
    padded = DataCollatorForBertPretraining(tokenizer, seed=0)([*examples[:3], {"input_ids": [CLS, 10, SEP]}])
    assert padded["attention_mask"].sum(dim=1).tolist() == [SEQ_LEN] * 3 + [3]

    model = BudgetBertForMaskedLM(tiny_config(vocab_size=VOCAB, max_position_embeddings=SEQ_LEN)).eval()
    with torch.no_grad():
        unmasked = model(**batch).loss
        ones = model(**batch, attention_mask=torch.ones_like(batch["input_ids"])).loss
    assert torch.allclose(unmasked, ones)


def test_max_predictions_per_seq_caps_each_row_at_random_positions(tokenizer):
    examples = _examples(128)
    batch = DataCollatorForBertPretraining(tokenizer, mlm_probability=0.5, max_predictions_per_seq=5, seed=0)(examples)
    original, masked = _masking(batch, examples)

    assert (masked.sum(dim=1) == 5).all()
    # The kept positions are spread over the whole row, not the first ones the Bernoulli draw picked.
    positions = masked.nonzero()[:, 1].float()
    assert positions.mean() == pytest.approx(SEQ_LEN / 2, rel=0.1)
    # Undone positions are restored: every unmasked input is its original token.
    assert torch.equal(batch["input_ids"][~masked], original[~masked])
    assert (batch["input_ids"][masked] == MASK).float().mean() == pytest.approx(0.8, abs=0.06)


def test_cap_above_the_draw_changes_nothing_from_the_parent(tokenizer):
    examples = _examples(16)
    ours = DataCollatorForBertPretraining(tokenizer, max_predictions_per_seq=SEQ_LEN, seed=7)(examples)
    parent = DataCollatorForLanguageModeling(tokenizer, seed=7)(examples)
    assert torch.equal(ours["input_ids"], parent["input_ids"])
    assert torch.equal(ours["labels"], parent["labels"])


def test_seeded_collators_repeat_and_different_seeds_differ(tokenizer):
    examples = _examples(8)
    first = DataCollatorForBertPretraining(tokenizer, max_predictions_per_seq=4, seed=3)(examples)
    again = DataCollatorForBertPretraining(tokenizer, max_predictions_per_seq=4, seed=3)(examples)
    other = DataCollatorForBertPretraining(tokenizer, max_predictions_per_seq=4, seed=4)(examples)
    assert torch.equal(first["input_ids"], again["input_ids"]) and torch.equal(first["labels"], again["labels"])
    assert not torch.equal(first["labels"], other["labels"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_predictions_per_seq": 0}, "--max_predictions_per_seq must be a positive integer"),
        ({"max_predictions_per_seq": 5, "return_tensors": "np"}, "needs return_tensors='pt'"),
        ({"max_predictions_per_seq": 5, "mlm": False}, "only applies to masked language modeling"),
    ],
)
def test_invalid_settings_name_the_flag(tokenizer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataCollatorForBertPretraining(tokenizer, **kwargs)
