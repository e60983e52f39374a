"""Load a snapshot's tokenizer and a sequence-classification model sized for the data's labels.

Works for any Auto-class model and for budget-bert snapshots, either with `budget_bert` imported (which
registers its Auto classes) or through the snapshot's saved code with `--trust_remote_code`. A pretraining
snapshot (masked-LM head) gets a newly initialised classification head: transformers' load report lists
those weights as MISSING, which is expected. A model that already has a classification head for a different
number of labels is refused unless `--ignore_mismatched_sizes`.
"""

from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from budget_bert.data.tokenization import load_tokenizer
from budget_bert.glue.glue_arguments import ModelArguments
from budget_bert.glue.glue_data import LabelSpec


def _hub_kwargs(model_args: ModelArguments) -> dict:
    return {
        "cache_dir": model_args.cache_dir,
        "revision": model_args.model_revision,
        "token": model_args.token,
        "trust_remote_code": model_args.trust_remote_code,
    }


def load_finetuning_tokenizer(model_args: ModelArguments) -> PreTrainedTokenizerBase:
    """The tokenizer of `--tokenizer_name`, or the one saved with the model."""
    if model_args.tokenizer_name:
        return load_tokenizer(model_args.tokenizer_name, "--tokenizer_name", **_hub_kwargs(model_args))
    return load_tokenizer(model_args.model_name_or_path, "--model_name_or_path", **_hub_kwargs(model_args))


def has_classification_head(config: PretrainedConfig) -> bool:
    """Whether the saved weights include a sequence-classification head (a finetuned model)."""
    return any(name.endswith("ForSequenceClassification") for name in config.architectures or ())


def check_head(config: PretrainedConfig, labels: LabelSpec, model_args: ModelArguments) -> None:
    """`ValueError` if the saved classification head has another number of labels than the data needs."""
    if has_classification_head(config) and config.num_labels != labels.num_labels:
        if not model_args.ignore_mismatched_sizes:
            kind = "a regression output (1 label)" if labels.is_regression else f"{labels.num_labels} labels"
            raise ValueError(
                f"{model_args.model_name_or_path} has a classification head for {config.num_labels} label(s) "
                f"({config.architectures[0]}), but the data needs {kind}. Finetune from a pretraining snapshot, "
                "or pass --ignore_mismatched_sizes to replace the head with a newly initialised one."
            )


def load_model(model_args: ModelArguments, labels: LabelSpec) -> PreTrainedModel:
    """A sequence-classification model for `labels`, with `id2label`/`label2id` and the problem type set."""
    config_path = model_args.config_name or model_args.model_name_or_path
    check_head(AutoConfig.from_pretrained(config_path, **_hub_kwargs(model_args)), labels, model_args)
    label_kwargs = {}
    if not labels.is_regression:
        label_kwargs = {
            "id2label": dict(enumerate(labels.names)),
            "label2id": {name: index for index, name in enumerate(labels.names)},
        }
    config = AutoConfig.from_pretrained(
        config_path,
        num_labels=labels.num_labels,
        problem_type="regression" if labels.is_regression else "single_label_classification",
        **label_kwargs,
        **_hub_kwargs(model_args),
    )
    return AutoModelForSequenceClassification.from_pretrained(
        model_args.model_name_or_path,
        config=config,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        **_hub_kwargs(model_args),
    )
