"""``EWCSFTTrainer``: TRL's ``SFTTrainer`` with the EWC penalty and per-example task weights.

The loss of a micro-batch is the completion-only cross-entropy, each example's tokens weighted by its
``weight`` column (the corpus's per-task mixture weight), plus ``lambda * sum F * dW^2`` from
``e2wm.training.ewc.EWC``. The penalty is added once per optimizer step: divided by the gradient accumulation
steps when the loss is normalized by the global token count (``num_items_in_batch``), as ``Trainer`` then
leaves accumulation to the loss. Every rank adds the same penalty and DDP averages gradients, so
multi-process training needs no other correction. ``ce_loss`` and ``ewc_penalty`` are logged with the
usual metrics. Label smoothing, DFT loss, a custom ``compute_loss_func`` and MoE auxiliary losses are not
supported here.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import SFTTrainer

from e2wm.errors import E2WMError
from e2wm.training.ewc import EWC


class _WithWeights:
    """Wraps a collator so that each example's ``weight`` reaches ``compute_loss`` as a tensor."""

    def __init__(self, collator: Any):
        self.collator = collator

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator([{k: v for k, v in e.items() if k != "weight"} for e in examples])
        if "weight" in examples[0]:
            batch["weight"] = torch.tensor([float(e["weight"]) for e in examples], dtype=torch.float32)
        return batch


class EWCSFTTrainer(SFTTrainer):
    """``SFTTrainer`` plus EWC (``fisher``, ``ewc_lambda``) and per-example loss weights."""

    def __init__(
        self,
        *args: Any,
        fisher: dict[str, torch.Tensor] | None = None,
        ewc_lambda: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        if (
            self.args.loss_type != "nll"
            or self.label_smoother is not None
            or self.compute_loss_func is not None
        ):
            raise E2WMError(
                "EWCSFTTrainer supports loss_type 'nll' without label smoothing or compute_loss_func"
            )
        self.ewc = EWC(self.model, fisher, ewc_lambda) if fisher is not None and ewc_lambda > 0 else None
        self.data_collator = _WithWeights(self.data_collator)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if "weight" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "weight"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        weight = inputs.pop("weight", None)
        inputs["use_cache"] = False
        outputs = model(**inputs, fused_lm_head=True)
        per_token = -outputs.log_probs  # zero where the label is ignored (prompt, padding)
        if weight is not None:
            per_token = per_token * weight.to(per_token.dtype)[:, None]
        num_tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
        ce = per_token.sum() / torch.as_tensor(num_tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            ce = ce * self.accelerator.num_processes  # DDP averages gradients over ranks
        loss = ce
        metrics = self._metrics[mode]
        if self.ewc is not None and mode == "train":
            penalty = self.ewc.penalty()
            steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
            loss = ce + penalty.to(ce.dtype) / steps
            metrics["ewc_penalty"].append(penalty.item())
        gather = self.accelerator.gather_for_metrics
        num_valid = gather(outputs.label_mask.sum()).sum()
        token_ce = gather(per_token.detach().sum()).sum() / num_valid.clamp(min=1)
        metrics["ce_loss"].append(token_ce.item())
        entropy = gather(outputs.entropy.detach().sum()).sum()
        correct = gather(outputs.is_top1.sum()).sum()
        metrics["entropy"].append((entropy / num_valid).item() if num_valid > 0 else 0.0)
        metrics["mean_token_accuracy"].append((correct / num_valid).item() if num_valid > 0 else 0.0)
        if mode == "train" and "attention_mask" in inputs:
            self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item()
            metrics["num_tokens"] = [self._total_train_tokens]
        return (loss, outputs) if return_outputs else loss
