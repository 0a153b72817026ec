"""Per-row loss weights for TRL's ``SFTTrainer``: ``LetiConfig.failure_loss_weight``.

``SFTTrainer`` averages the loss over a batch's tokens, every row alike (the paper's LeTI). A weight on
failing programs' rows (a recipe option, not the paper's) needs a weight per token. TRL has no per-row
weight, so the rows carry a ``loss_weight`` column (``trainers.sequences.build_rows``), ``WeightedCollator``
turns it into a tensor the shape of ``labels``, and ``WeightedSFTTrainer`` multiplies each token's
log-probability by it inside TRL's own loss (so TRL's fused LM head, token count, gradient accumulation and
metrics stay as they are). Rows of weight 1 give exactly ``SFTTrainer``'s loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from trl import SFTTrainer

from .sequences import LOSS_WEIGHT

TOKEN_WEIGHTS = "loss_weights"  # the batch's per-token weights (popped before the model's forward)


class WeightedCollator:
    """Wraps ``SFTTrainer``'s collator: the rows' ``loss_weight`` becomes a ``loss_weights`` tensor the
    shape of the batch's ``labels`` (each row's weight on its tokens; 0 on padding), padded or padding-free."""

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, Any]]):
        self.collator = collator

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        weights = [float(example.get(LOSS_WEIGHT, 1.0)) for example in examples]
        batch = self.collator([{k: v for k, v in example.items() if k != LOSS_WEIGHT} for example in examples])
        labels = batch["labels"]
        lengths = [len(example["input_ids"]) for example in examples]
        per_token = torch.zeros(labels.shape, dtype=torch.float32)
        if labels.shape[0] == len(examples):  # one row per example, right-padded
            for i, (weight, length) in enumerate(zip(weights, lengths)):
                per_token[i, :length] = weight
        else:  # padding-free: the examples concatenated into one row
            per_token[0, :sum(lengths)] = torch.repeat_interleave(torch.tensor(weights), torch.tensor(lengths))
        batch[TOKEN_WEIGHTS] = per_token
        return batch


class _WeightedForward:
    """The model, as ``SFTTrainer.compute_loss`` calls it, with each token's log-probability scaled by its weight."""

    def __init__(self, model: torch.nn.Module, weights: torch.Tensor):
        self.model, self.weights = model, weights

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        outputs = self.model(*args, **kwargs)
        log_probs = getattr(outputs, "log_probs", None)
        if log_probs is None:
            raise RuntimeError("failure_loss_weight needs TRL's fused LM head (SFTTrainer's default loss); this TRL "
                               "version computes the loss another way: set failure_loss_weight=1.0.")
        weights = self.weights.to(log_probs.device, log_probs.dtype)
        outputs.log_probs = log_probs * weights[:, weights.shape[1] - log_probs.shape[1]:]  # the labels are shifted
        return outputs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


class WeightedSFTTrainer(SFTTrainer):
    """``SFTTrainer`` whose loss weighs each row by its ``loss_weight`` column (missing: 1.0).

    The loss is ``sum(weight * token loss) / tokens``: a row of weight 0.5 pulls half as hard, and the
    normalisation (the batch's token count) is ``SFTTrainer``'s. It supports TRL's default negative
    log-likelihood loss, without label smoothing or a ``compute_loss_func``.

    Examples:
        >>> import torch
        >>> from trainers.weighted_loss import WeightedCollator
        >>> from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
        >>> collate = WeightedCollator(DataCollatorForLanguageModeling(pad_token_id=0))
        >>> collate([{"input_ids": [5, 6, 7], "loss_weight": 0.25}, {"input_ids": [8, 9]}])["loss_weights"]
        tensor([[0.2500, 0.2500, 0.2500],
                [1.0000, 1.0000, 0.0000]])
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.compute_loss_func is not None or self.label_smoother is not None or self.args.loss_type != "nll":
            raise ValueError("failure_loss_weight weighs TRL's plain negative log-likelihood loss: drop "
                             "label_smoothing_factor / compute_loss_func / loss_type, or set failure_loss_weight=1.0.")
        if not isinstance(self.data_collator, WeightedCollator):
            self.data_collator = WeightedCollator(self.data_collator)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if LOSS_WEIGHT not in self._signature_columns:  # else Trainer drops the column before the collator sees it
            self._signature_columns = [*self._signature_columns, LOSS_WEIGHT]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop(TOKEN_WEIGHTS, None)
        if weights is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return super().compute_loss(_WeightedForward(model, weights), inputs, return_outputs, num_items_in_batch)
