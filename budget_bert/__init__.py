"""budget-bert: pretrain a BERT-like encoder inside a fixed wall-clock budget with the stock HF Trainer.

Importing the package registers BudgetBert with the Auto classes (here, and only here), and marks the classes for
`register_for_auto_class`, so that `save_pretrained` copies the code next to the weights and a saved folder loads
with `trust_remote_code=True` where budget_bert is not installed.
"""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from budget_bert.configuration_budget_bert import BudgetBertConfig
from budget_bert.modeling_budget_bert import (
    BudgetBertForMaskedLM,
    BudgetBertForSequenceClassification,
    BudgetBertModel,
    BudgetBertPreTrainedModel,
)


AutoConfig.register(BudgetBertConfig.model_type, BudgetBertConfig, exist_ok=True)
BudgetBertConfig.register_for_auto_class()
for _auto_class, _model_class in (
    (AutoModel, BudgetBertModel),
    (AutoModelForMaskedLM, BudgetBertForMaskedLM),
    (AutoModelForSequenceClassification, BudgetBertForSequenceClassification),
):
    _auto_class.register(BudgetBertConfig, _model_class, exist_ok=True)
    _model_class.register_for_auto_class(_auto_class.__name__)

__all__ = [
    "BudgetBertConfig",
    "BudgetBertForMaskedLM",
    "BudgetBertForSequenceClassification",
    "BudgetBertModel",
    "BudgetBertPreTrainedModel",
]
