"""The recommended recipe: every flag not given takes the recipe's default, every flag given wins, and the README's
"Recommended recipe" table says what the defaults are."""

import re

import pytest

from budget_bert.pretraining.pretraining_arguments import parse_pretraining_args
from budget_bert.pretraining.recipe import RECIPE, default_intermediate_size
from pretraining_fixtures import REPO, prepared_data  # noqa: F401 - fixture
from test_arguments import SEED_COMMAND, seed_argv

SHAPE = ["--hidden_size", "64", "--num_hidden_layers", "2", "--num_attention_heads", "2"]


def applied(args) -> dict:
    """Where each recipe flag lands once parsed: the model config, the data, the budget or the TrainingArguments."""
    config, data, budget, training = args.model_config, args.data, args.budget, args.training
    return {
        "mlp_type": config.mlp_type,
        "position_embedding_type": config.position_embedding_type,
        "linear_bias": config.linear_bias,
        "norm_bias": config.norm_bias,
        "qk_norm": config.qk_norm,
        "scale_residual_init": config.scale_residual_init,
        "scale_head_init": config.scale_head_init,
        "classifier_head": config.classifier_head,
        "classifier_pooling": config.classifier_pooling,
        "hidden_dropout_prob": config.hidden_dropout_prob,
        "attention_probs_dropout_prob": config.attention_probs_dropout_prob,
        "mlm_probability": data.mlm_probability,
        "learning_rate": training.learning_rate,
        "weight_decay": training.weight_decay,
        "adam_beta1": training.adam_beta1,
        "adam_beta2": training.adam_beta2,
        "adam_epsilon": training.adam_epsilon,
        "max_grad_norm": training.max_grad_norm,
        "warmup_proportion": budget.warmup_proportion,
        "curve": budget.curve,
    }


def test_flags_not_given_take_the_recipe(prepared_data, tmp_path):
    args = parse_pretraining_args(["--dataset_path", str(prepared_data.dataset), "--output_dir", str(tmp_path), *SHAPE])
    assert applied(args) == {flag: item.value for flag, item in RECIPE.items()}
    # The feed-forward width follows the hidden size: 2/3 of 4H for the gated MLP (same parameters as BERT's).
    assert args.model_config.intermediate_size == default_intermediate_size(64, RECIPE["mlp_type"].value)


@pytest.mark.parametrize(("hidden", "mlp_type", "width"), [(256, "glu", 688), (768, "glu", 2048), (256, "mlp", 1024)])
def test_default_intermediate_size(hidden, mlp_type, width):
    assert default_intermediate_size(hidden, mlp_type) == width


def test_seed_flags_override_every_default(prepared_data, tmp_path):
    """The seed's command keeps its exact meaning: each recipe flag it gives has the seed's value."""
    args = parse_pretraining_args(seed_argv(prepared_data, tmp_path))
    seed = dict(zip(SEED_COMMAND, SEED_COMMAND[1:] + [""]))  # each flag -> the token after it
    twins = {"learning_rate": "--lr", "max_grad_norm": "--gradient_clipping", "adam_epsilon": "--adam_eps"}
    given = {flag: seed[twins.get(flag, f"--{flag}")] for flag in RECIPE if twins.get(flag, f"--{flag}") in seed}
    assert set(given) >= {"learning_rate", "hidden_dropout_prob", "weight_decay", "max_grad_norm", "curve"}
    values = applied(args)
    for flag, text in given.items():
        assert values[flag] == type(values[flag])(text), flag
    assert args.model_config.intermediate_size == 4096  # given: taken as it is, not derived


def test_explicit_flags_win_over_the_recipe(prepared_data, tmp_path):
    argv = ["--dataset_path", str(prepared_data.dataset), "--output_dir", str(tmp_path), *SHAPE,
            "--mlp_type", "mlp", "--position_embedding_type", "absolute", "--linear_bias", "--norm_bias", "true",
            "--qk_norm", "--scale_residual_init", "--scale_head_init", "true",
            "--classifier_head", "pooler", "--classifier_pooling", "cls",
            "--hidden_dropout_prob", "0.1", "--mlm_probability", "0.15", "--learning_rate", "5e-4",
            "--max_grad_norm", "1.0", "--curve", "exp", "--adam_beta2", "0.999"]
    values = applied(parse_pretraining_args(argv))
    assert values["mlp_type"] == "mlp" and values["position_embedding_type"] == "absolute"
    assert values["linear_bias"] is True and values["norm_bias"] is True and values["qk_norm"] is True
    assert (values["scale_residual_init"], values["scale_head_init"]) == (True, True)
    assert (values["classifier_head"], values["classifier_pooling"]) == ("pooler", "cls")
    assert (values["hidden_dropout_prob"], values["mlm_probability"], values["learning_rate"]) == (0.1, 0.15, 5e-4)
    assert (values["max_grad_norm"], values["curve"], values["adam_beta2"]) == (1.0, "exp", 0.999)


def test_readme_states_the_recipe():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Recommended recipe", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `--(\w+)` \| `([^`]*)` \|", section, flags=re.MULTILINE))
    assert rows == {flag: str(item.value) for flag, item in RECIPE.items()}
