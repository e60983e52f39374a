"""Load a snapshot's tokenizer and a sequence-classification model sized for the data's labels.

Works for any Auto-class model and for budget-bert snapshots, either with `budget_bert` imported (which
registers its Auto classes) or through the snapshot's saved code with `--trust_remote_code`. A pretraining
snapshot (masked-LM head) gets a newly initialised classification head: transformers' load report lists
those weights as MISSING, which is expected. A model that already has a classification head for a different
number of labels is refused unless `--ignore_mismatched_sizes`; a model whose head has named labels that include
every label of the data keeps its head and its label ids (`labels_for_model`).
"""

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from transformers.utils import logging

from budget_bert.cli import parse_config_overrides
from budget_bert.data.tokenization import load_tokenizer
from budget_bert.glue.glue_arguments import ModelArguments
from budget_bert.glue.glue_data import LabelSpec


logger = logging.get_logger(__name__)


def _hub_kwargs(model_args: ModelArguments) -> dict:
    return {
        "cache_dir": model_args.cache_dir,
        "revision": model_args.model_revision,
        "token": model_args.token,
        "trust_remote_code": model_args.trust_remote_code,
    }


def _load_config(model_args: ModelArguments, **kwargs) -> PretrainedConfig:
    path = model_args.config_name or model_args.model_name_or_path
    return AutoConfig.from_pretrained(path, **kwargs, **_hub_kwargs(model_args))


def load_finetuning_tokenizer(model_args: ModelArguments) -> PreTrainedTokenizerBase:
    """The tokenizer of `--tokenizer_name`, or the one saved with the model."""
    if model_args.tokenizer_name:
        return load_tokenizer(model_args.tokenizer_name, "--tokenizer_name", **_hub_kwargs(model_args))
    return load_tokenizer(model_args.model_name_or_path, "--model_name_or_path", **_hub_kwargs(model_args))


def has_classification_head(config: PretrainedConfig) -> bool:
    """Whether the saved weights include a sequence-classification head (a finetuned model)."""
    return any(name.endswith("ForSequenceClassification") for name in config.architectures or ())


def head_label_names(config: PretrainedConfig) -> tuple[str, ...] | None:
    """The class names of the saved classification head in id order; `None` without a head, or for a head whose
    labels were never named (transformers' default `LABEL_0`, `LABEL_1`, ...)."""
    if not has_classification_head(config) or not config.id2label:
        return None
    names = tuple(str(config.id2label[index]) for index in sorted(config.id2label, key=int))
    return None if names == tuple(f"LABEL_{index}" for index in range(len(names))) else names


def labels_for_model(model_args: ModelArguments, labels: LabelSpec) -> LabelSpec:
    """The label set to finetune or evaluate with: the model's own when its head knows every label of the data.

    A finetuned model evaluated on a file that holds only some of its classes (or lists them in another order)
    keeps its head and its ids, as HuggingFace run_glue does: the data's own label set would not fit the head,
    and `--ignore_mismatched_sizes` would replace it with a newly initialised one whose scores mean nothing.
    Names are compared without case. Otherwise (no named head, regression, labels the head does not know) the
    data's label set, `labels`, is returned.
    """
    if labels.is_regression:
        return labels
    names = head_label_names(_load_config(model_args))
    if names is None:
        return labels
    model_ids = {name.lower(): index for index, name in enumerate(names)}
    unknown = [name for name in labels.names if name.lower() not in model_ids]
    if unknown:
        logger.warning(
            f"{model_args.model_name_or_path} was finetuned on the labels {list(names)}, which do not include "
            f"{unknown} of the data: its classification head does not fit this data."
        )
        return labels
    to_id = {value: model_ids[labels.names[index].lower()] for value, index in labels.to_id.items()}
    return LabelSpec(False, names, to_id)


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
    """A sequence-classification model for `labels`, with `id2label`/`label2id`, the problem type and
    `--config_overrides` set.

    Raises:
        UsageError: a `--config_overrides` key that is not a field of the model's config, or a value of the wrong type.
    """
    saved_config = _load_config(model_args)
    check_head(saved_config, labels, model_args)
    overrides = parse_config_overrides(model_args.config_overrides, saved_config) if model_args.config_overrides else {}
    label_kwargs = {}
    if not labels.is_regression:
        label_kwargs = {
            "id2label": dict(enumerate(labels.names)),
            "label2id": {name: index for index, name in enumerate(labels.names)},
        }
    config = _load_config(
        model_args,
        num_labels=labels.num_labels,
        problem_type="regression" if labels.is_regression else "single_label_classification",
        **label_kwargs,
        **overrides,
    )
    return AutoModelForSequenceClassification.from_pretrained(
        model_args.model_name_or_path,
        config=config,
        # A snapshot of a `--fp16` DeepSpeed run is saved in float16, which `dtype="auto"` would keep: mixed-precision
        # training needs float32 weights (the Trainer's fp16 cannot unscale float16 gradients).
        dtype=torch.float32,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        **_hub_kwargs(model_args),
    )
