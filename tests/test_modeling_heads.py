"""BudgetBert's heads: sparse vs dense MLM head, padded vocabulary, Trainer loss kwargs, classification losses."""

import copy

import pytest
import torch
from torch import nn
from transformers import Trainer, TrainingArguments

from budget_bert import BudgetBertForMaskedLM, BudgetBertForSequenceClassification
from modeling_fixtures import OPTION_SETS, TINY, tiny_config


def mlm_batch(rows: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Padded MLM batch whose rows carry different numbers of labels (the last label is the last real token)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, TINY["vocab_size"], (rows, 10), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 7:] = 0
    labelled = (torch.rand(input_ids.shape, generator=generator) < 0.3) & attention_mask.bool()
    labelled[:, 0] = True
    labelled[0, :5] = True
    labels = torch.where(labelled, input_ids, -100)
    labels[0, 1] = TINY["vocab_size"] - 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def sparse_and_dense(**overrides) -> tuple[BudgetBertForMaskedLM, BudgetBertForMaskedLM]:
    torch.manual_seed(0)
    sparse = BudgetBertForMaskedLM(tiny_config(sparse_mask_prediction=True, **overrides)).train()
    dense = copy.deepcopy(sparse)
    dense.config.sparse_mask_prediction = False
    return sparse, dense


@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("encoder_ln_mode", ["pre-ln", "post-ln"])
def test_sparse_head_gives_the_dense_loss_and_gradients(encoder_ln_mode, options):
    sparse, dense = sparse_and_dense(**{**options, "encoder_ln_mode": encoder_ln_mode})
    batch = mlm_batch()
    sparse_out, dense_out = sparse(**batch), dense(**batch)
    sparse_out.loss.backward()
    dense_out.loss.backward()
    torch.testing.assert_close(sparse_out.loss, dense_out.loss)
    for (name, a), b in zip(sparse.named_parameters(), dense.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_sparse_logits_are_the_dense_logits_of_the_labelled_positions():
    sparse, dense = sparse_and_dense()
    batch = mlm_batch()
    labelled = batch["labels"] != -100
    sparse_logits = sparse(**batch).logits
    dense_logits = dense(**batch).logits
    assert sparse_logits.shape == (int(labelled.sum()), TINY["vocab_size"])
    assert dense_logits.shape == (*batch["input_ids"].shape, TINY["vocab_size"])
    torch.testing.assert_close(sparse_logits, dense_logits[labelled])


def test_without_labels_the_logits_are_dense_over_the_real_vocabulary():
    model = BudgetBertForMaskedLM(tiny_config()).eval()
    batch = mlm_batch()
    logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.shape == (*batch["input_ids"].shape, TINY["vocab_size"])


@pytest.mark.parametrize("sparse_mask_prediction", [True, False])
def test_padded_vocabulary_rows_are_never_predicted(sparse_mask_prediction):
    torch.manual_seed(0)
    model = BudgetBertForMaskedLM(tiny_config(sparse_mask_prediction=sparse_mask_prediction)).eval()
    assert model.lm_head.decoder.out_features == 56 > TINY["vocab_size"]
    with torch.no_grad():
        model.lm_head.decoder.bias[TINY["vocab_size"]:] = 1e4  # would win every argmax if they were predicted
    batch = mlm_batch()
    out = model(**batch)
    assert out.logits.shape[-1] == TINY["vocab_size"]
    labelled = batch["labels"] != -100
    logits = out.logits if sparse_mask_prediction else out.logits[labelled]
    expected = nn.functional.cross_entropy(logits, batch["labels"][labelled])
    torch.testing.assert_close(out.loss, expected)
    assert out.loss < 100


@pytest.mark.parametrize("decoder_bias", [True, False])
def test_the_decoder_puts_minus_infinity_in_the_padded_columns_only(decoder_bias):
    torch.manual_seed(0)
    model = BudgetBertForMaskedLM(tiny_config(decoder_bias=decoder_bias))
    hidden = torch.randn(3, TINY["hidden_size"], requires_grad=True)
    padded_logits = model.lm_head(hidden)
    vocab = TINY["vocab_size"]
    assert padded_logits.shape == (3, 56)
    assert torch.isfinite(padded_logits[:, :vocab]).all()
    assert torch.isneginf(padded_logits[:, vocab:]).all()
    nn.functional.cross_entropy(padded_logits, torch.tensor([0, 5, vocab - 1])).backward()
    weight_grad = model.lm_head.decoder.weight.grad
    assert torch.isfinite(weight_grad).all() and torch.isfinite(hidden.grad).all()
    assert weight_grad[vocab:].eq(0).all()  # the padded rows learn nothing
    if decoder_bias:
        assert model.lm_head.decoder.bias.grad[vocab:].eq(0).all()


def token_losses(model: BudgetBertForMaskedLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-token cross-entropy of the labelled positions, from the dense logits."""
    dense = copy.deepcopy(model)
    dense.config.sparse_mask_prediction = False
    logits = dense(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labelled = batch["labels"] != -100
    return nn.functional.cross_entropy(logits[labelled], batch["labels"][labelled], reduction="none")


@pytest.mark.parametrize("as_tensor", [False, True])
def test_num_items_in_batch_makes_the_loss_a_sum_over_items(as_tensor):
    torch.manual_seed(0)
    model = BudgetBertForMaskedLM(tiny_config()).eval()
    batch = mlm_batch()
    losses = token_losses(model, batch)
    num_items = 17 if not as_tensor else torch.tensor(17)
    loss = model(**batch, num_items_in_batch=num_items).loss
    torch.testing.assert_close(loss, losses.sum() / 17)
    torch.testing.assert_close(model(**batch).loss, losses.mean())


def test_micro_batches_with_num_items_in_batch_add_up_to_the_full_batch_gradient():
    sparse, accumulated = sparse_and_dense()
    accumulated.config.sparse_mask_prediction = True
    batch = mlm_batch(rows=4)
    sparse(**batch).loss.backward()
    num_items = int((batch["labels"] != -100).sum())
    for rows in (slice(0, 1), slice(1, 4)):  # 1 row with many labels, 3 rows with fewer
        micro = {k: v[rows] for k, v in batch.items()}
        accumulated(**micro, num_items_in_batch=num_items).loss.backward()
    for a, b in zip(sparse.parameters(), accumulated.parameters()):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("model_class", [BudgetBertForMaskedLM, BudgetBertForSequenceClassification])
def test_heads_declare_that_they_take_the_trainer_loss_kwargs(model_class):
    assert model_class.accepts_loss_kwargs is True


def train_one_sgd_step(tmp_path, batch_size: int, accumulation: int) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = BudgetBertForMaskedLM(tiny_config())
    batch = mlm_batch(rows=4)
    dataset = [{k: v[i] for k, v in batch.items()} for i in range(4)]
    args = TrainingArguments(
        output_dir=str(tmp_path / f"run_{accumulation}"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        learning_rate=1.0,
        lr_scheduler_type="constant",
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    assert trainer.model_accepts_loss_kwargs
    trainer.train()
    return [p.detach().clone() for p in model.parameters()]


def test_trainer_gradient_accumulation_matches_one_big_batch(tmp_path):
    one_batch = train_one_sgd_step(tmp_path, batch_size=4, accumulation=1)
    accumulated = train_one_sgd_step(tmp_path, batch_size=2, accumulation=2)
    for a, b in zip(one_batch, accumulated):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def classification_case(problem: str, num_labels: int) -> tuple[torch.Tensor, nn.Module]:
    """Labels for `problem` and HF's BertForSequenceClassification loss for it."""
    generator = torch.Generator().manual_seed(1)
    if problem == "single_label_classification":
        return torch.randint(0, num_labels, (4,), generator=generator), nn.CrossEntropyLoss()
    if problem == "multi_label_classification":
        return (torch.rand(4, num_labels, generator=generator) > 0.5).float(), nn.BCEWithLogitsLoss()
    return torch.randn(4, num_labels, generator=generator).squeeze(-1), nn.MSELoss()


@pytest.mark.parametrize(
    ("problem", "num_labels", "configured_problem"),
    [
        ("single_label_classification", 3, None),  # inferred from integer labels
        ("multi_label_classification", 3, None),  # inferred from float labels
        ("regression", 1, None),  # inferred from a single output
        ("regression", 2, "regression"),  # several outputs: only when configured
    ],
)
@pytest.mark.parametrize("options", OPTION_SETS)
def test_sequence_classification_losses_follow_hf(problem, num_labels, configured_problem, options):
    torch.manual_seed(0)
    config = tiny_config(**options, num_labels=num_labels, problem_type=configured_problem)
    model = BudgetBertForSequenceClassification(config).eval()
    batch = mlm_batch()
    del batch["labels"]
    labels, hf_loss = classification_case(problem, num_labels)
    out = model(**batch, labels=labels)
    assert model.config.problem_type == problem
    assert out.logits.shape == (4, num_labels)
    if problem == "regression" and num_labels == 1:
        expected = hf_loss(out.logits.squeeze(), labels.squeeze())
    elif problem == "single_label_classification":
        expected = hf_loss(out.logits.view(-1, num_labels), labels.view(-1))
    else:
        expected = hf_loss(out.logits, labels)
    torch.testing.assert_close(out.loss, expected)
    # The Trainer counts labels.ne(-100) (examples, or examples x outputs) over all micro-batches and processes;
    # twice this batch's count, as with two accumulated micro-batches, halves its share of the mean.
    num_items = 2 * int(labels.ne(-100).sum())
    summed = model(**batch, labels=labels, num_items_in_batch=num_items).loss
    torch.testing.assert_close(summed, expected / 2)
