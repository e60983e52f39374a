"""bench/recipe_steps.py: a fixed number of steps of each model trains and is scored the same way."""

import math
import sys

import pytest

from pretraining_fixtures import REPO, prepared_data  # noqa: F401 - fixture


@pytest.fixture()
def recipe_steps(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import recipe_steps

    return recipe_steps


@pytest.mark.parametrize("model", ["budget-bert", "modernbert"])
def test_a_few_steps_train_and_are_scored(recipe_steps, prepared_data, model, capsys):
    argv = ["--data", str(prepared_data.dataset), "--model", model, "--steps", "3", "--hidden_size", "32",
            "--num_hidden_layers", "1", "--num_attention_heads", "2", "--learning_rate", "1e-2"]
    untrained = recipe_steps.main([*argv, "--learning_rate", "0"])  # the same steps, the weights unchanged
    trained = recipe_steps.main(argv)
    assert trained["steps"] == 3 and math.isfinite(trained["eval_loss"])
    assert trained["eval_loss"] < untrained["eval_loss"]  # the steps did train
    assert trained["perplexity"] == pytest.approx(math.exp(trained["eval_loss"]), rel=1e-3)
    assert capsys.readouterr().out.count('"eval_loss"') == 2


def test_the_curves_by_step(recipe_steps):
    args = recipe_steps.RecipeStepsArguments(data="unused", steps=100, warmup_proportion=0.1)
    assert [args.lr_factor(step) for step in (5, 10, 55, 100)] == pytest.approx([0.5, 1.0, 0.5, 0.0])
    args = recipe_steps.RecipeStepsArguments(data="unused", steps=100, warmup_proportion=0.1, curve="wsd")
    factors = [args.lr_factor(step) for step in (5, 10, 79, 80, 85, 100)]
    assert factors == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.5, 0.0])  # 1-sqrt over the last 20%: 1 - sqrt(1/4)


@pytest.mark.parametrize(("flags", "message"), [({"curve": "cosine"}, "--curve cosine"),
                                                ({"cooldown_proportion": 0.0}, "--cooldown_proportion")])
def test_bad_curve_flags_are_refused_when_parsed(recipe_steps, flags, message):
    with pytest.raises(ValueError, match=message):
        recipe_steps.RecipeStepsArguments(data="unused", **flags)
