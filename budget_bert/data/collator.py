"""BERT masking on top of transformers' `DataCollatorForLanguageModeling`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import DataCollatorForLanguageModeling


@dataclass
class DataCollatorForBertPretraining(DataCollatorForLanguageModeling):
    """Dynamic BERT masking with a per-sequence cap on the number of predictions.

    Everything is `DataCollatorForLanguageModeling` (padding, `mlm_probability`, the 80/10/10 split set by
    `mask_replace_prob`/`random_replace_prob`, labels -100 on unmasked positions, a seeded generator through
    `seed`), with an attention mask only where a batch has padding (packed sequences fill every position: a model
    given no mask attends everywhere without testing a mask of ones, which on a GPU costs a host sync per step),
    and two changes inside `torch_mask_tokens`:

    - when examples carry no `special_tokens_mask`, it is derived from the token ids in one vectorised test
      against the tokenizer's special ids (so prepared data stores only `input_ids`); special tokens and padding
      are never masked;
    - `max_predictions_per_seq` (BERT's flag) caps the masked positions of each sequence: when the Bernoulli draw
      selects more, a uniformly random subset of that size is kept and the rest are restored, unmasked.

    Args (beyond the parent's):
        max_predictions_per_seq: the most positions masked in one sequence; `None` for no cap.
    """

    max_predictions_per_seq: int | None = None

    def __post_init__(self):
        super().__post_init__()
        problems = []
        if self.max_predictions_per_seq is not None:
            if self.max_predictions_per_seq < 1:
                problems.append(
                    "--max_predictions_per_seq must be a positive integer or unset, "
                    f"got {self.max_predictions_per_seq}"
                )
            if not self.mlm:
                problems.append("--max_predictions_per_seq only applies to masked language modeling (mlm=True)")
            if self.whole_word_mask:
                problems.append("--max_predictions_per_seq cannot be combined with whole-word masking: unset one")
            if self.return_tensors != "pt":
                problems.append(f"--max_predictions_per_seq needs return_tensors='pt', got {self.return_tensors!r}")
        if problems:
            raise ValueError("; ".join(problems))
        self._special_ids = torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=torch.long)

    def torch_call(self, examples: list[Any]) -> dict[str, Any]:
        """The parent's batch, without its `attention_mask` when that keeps every position."""
        batch = super().torch_call(examples)
        attention_mask = batch.get("attention_mask")
        if attention_mask is not None and bool(attention_mask.all()):
            del batch["attention_mask"]
        return batch

    def torch_mask_tokens(
        self, inputs: torch.Tensor, special_tokens_mask: Any | None = None, offset_mapping: Any | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask `inputs` in place as the parent does, then cap each row at `max_predictions_per_seq` predictions.

        Returns `(inputs, labels)`: labels hold the original id on the kept masked positions and -100 elsewhere.
        """
        if special_tokens_mask is None:
            special_tokens_mask = torch.isin(inputs, self._special_ids)
        original = inputs.clone()
        inputs, labels = super().torch_mask_tokens(
            inputs, special_tokens_mask=special_tokens_mask, offset_mapping=offset_mapping
        )
        if self.max_predictions_per_seq is None:
            return inputs, labels

        masked = labels != -100
        # Rank the masked positions of each row in a random order; those ranked past the cap are undone.
        # The replacement draws (80/10/10) were independent of the selection, so the kept ones keep the split.
        scores = torch.rand(masked.shape, generator=self.generator)
        scores[~masked] = 2.0
        ranks = scores.argsort(dim=1).argsort(dim=1)
        dropped = masked & (ranks >= self.max_predictions_per_seq)
        inputs[dropped] = original[dropped]
        labels[dropped] = -100
        return inputs, labels
