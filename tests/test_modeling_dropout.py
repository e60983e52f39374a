"""BudgetBert's CPU dropout: the same distribution, scaling and gradients as `F.dropout`, reproducible by seed."""

import math

import pytest
import torch

from budget_bert.modeling_budget_bert import BudgetBertSelfAttention, Dropout, dropout
from modeling_fixtures import tiny_config


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keeps_one_minus_p_of_the_elements_and_scales_them_by_its_inverse(p):
    torch.manual_seed(0)
    x = torch.rand(200, 5000) + 1.0  # no zeros of its own
    y = dropout(x, p, training=True)
    kept = y != 0
    share = kept.double().mean().item()
    sigma = math.sqrt(p * (1 - p) / x.numel())
    assert abs(share - (1 - p)) < 5 * sigma
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))


def test_each_position_is_dropped_independently_of_its_neighbours():
    torch.manual_seed(0)
    kept = dropout(torch.ones(1_000_000), 0.5, training=True) != 0
    # Four neighbours come from one 64-bit draw: their masks must still be independent.
    both = (kept[:-1] & kept[1:]).double().mean().item()
    assert both == pytest.approx(0.25, abs=5 * math.sqrt(0.25 * 0.75 / 1e6))
    groups = kept.view(-1, 4).sum(dim=1)
    expected = torch.tensor([1, 4, 6, 4, 1], dtype=torch.float64) / 16
    observed = torch.bincount(groups, minlength=5).double() / groups.numel()
    torch.testing.assert_close(observed, expected, atol=0.003, rtol=0)


def test_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(0)
    x = torch.randn(64, 33, requires_grad=True)
    y = dropout(x, 0.25, training=True)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, (y != 0).float() / 0.75)


def test_the_same_seed_gives_the_same_mask_and_another_seed_another():
    x = torch.ones(1000)
    masks = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        masks.append(dropout(x, 0.1, training=True))
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])


@pytest.mark.parametrize(("p", "training"), [(0.1, False), (0.0, True)])
def test_identity_when_not_training_or_p_is_zero(p, training):
    x = torch.randn(7, 9)
    assert torch.equal(dropout(x, p, training), x)


def test_p_one_drops_everything():
    assert torch.count_nonzero(dropout(torch.ones(10, 10), 1.0, training=True)) == 0


def test_bf16_input_stays_bf16():
    torch.manual_seed(0)
    y = dropout(torch.ones(1000, dtype=torch.bfloat16), 0.5, training=True)
    assert y.dtype == torch.bfloat16 and set(y.unique().tolist()) == {0.0, 2.0}


def test_dropout_module_follows_train_and_eval():
    module = Dropout(0.5)
    x = torch.ones(1000)
    assert torch.count_nonzero(module(x)) < 1000
    assert torch.equal(module.eval()(x), x)


def test_attention_dropout_on_the_cpu_averages_to_the_attention_without_dropout():
    torch.manual_seed(0)
    attention = BudgetBertSelfAttention(tiny_config(attention_probs_dropout_prob=0.5))
    hidden = torch.randn(2, 6, attention.config.hidden_size)
    with torch.no_grad():
        expected, _ = attention.eval()(hidden)
        attention.train()
        draws = torch.stack([attention(hidden)[0] for _ in range(2000)])
    assert not torch.allclose(draws[0], expected, atol=1e-3)  # dropout is on in training
    torch.testing.assert_close(draws.mean(dim=0), expected, atol=0.03, rtol=0)
