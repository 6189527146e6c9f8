"""The eval results a pushed model carries: ``results.json`` of ``e2wm eval`` checked, as the card's
``model-index`` and as the Hub's ``.eval_results`` file."""

from __future__ import annotations

import yaml
from huggingface_hub import EvalResult

from e2wm.errors import E2WMError

RESULTS_FORMAT = "e2wm-eval/1"
CORPUS_ID = "e2wm-embodied-qa"  # model-index dataset type when the corpus is not on the Hub
CORPUS_NAME = "e2wm embodied QA corpus"
RETENTION_ID = "e2wm-general-text"
ROW_KEYS = ("variant", "task", "split", "metric", "value")


def validate_results(results: dict) -> None:
    """Check ``results`` has the ``e2wm eval`` format and well-formed rows; E2WMError if not."""
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        found = results.get("format") if isinstance(results, dict) else type(results).__name__
        raise E2WMError(f"results are not {RESULTS_FORMAT} output of `e2wm eval` (format {found!r})")
    for section, keys in (("results", ROW_KEYS), ("by_length", ROW_KEYS), ("retention", ("variant",))):
        rows = results.get(section) or []
        for i, row in enumerate(rows if isinstance(rows, list) else [None]):
            missing = [k for k in keys if not isinstance(row, dict) or k not in row]
            if missing:
                raise E2WMError(f"results: {section}[{i}] lacks {', '.join(missing)}")
            if "value" in keys and not isinstance(row["value"], int | float):
                raise E2WMError(f"results: {section}[{i}] has a non-numeric value {row['value']!r}")


def model_index_results(results: dict | None, dataset_repo_id: str | None) -> list[EvalResult]:
    """The card's ``model-index``: the fine-tuned scores per task and split, and retention perplexity."""
    if results is None:
        return []
    task = {"task_type": "text-generation", "task_name": "Embodied world knowledge (e2wm)"}
    found = [
        EvalResult(
            **task,
            dataset_type=dataset_repo_id or CORPUS_ID,
            dataset_name=CORPUS_NAME,
            dataset_split=row["split"],
            metric_type=row["metric"],
            metric_value=float(row["value"]),
            metric_name=f"{row['task']} {row['metric']}",
        )
        for row in results.get("results") or []
        if row["variant"] == "fine-tuned"
    ]
    found += [
        EvalResult(
            **task,
            dataset_type=RETENTION_ID,
            dataset_name="general English text (held out)"
            + (f", {row['source']}" if "source" in row else ""),
            metric_type="perplexity",
            metric_value=float(row["perplexity"]),
            metric_name="retention perplexity" + (f" ({row['source']})" if "source" in row else ""),
        )
        for row in results.get("retention") or []
        if row["variant"] == "fine-tuned" and row.get("perplexity") is not None
    ]
    return found


def eval_results_file(results: dict | None, dataset_repo_id: str | None) -> str | None:
    """The Hub's ``.eval_results/`` YAML (beside ``model-index`` in the card): the fine-tuned model's score
    on each task and test split of the corpus, which must be a Hub dataset; None without one or results."""
    from huggingface_hub import EvalResultEntry, eval_result_entries_to_yaml

    if results is None or dataset_repo_id is None:
        return None
    entries = [
        EvalResultEntry(
            dataset_id=dataset_repo_id,
            task_id=f"{row['task']}_{row['split']}",
            value=float(row["value"]),
            notes=row["metric"],
        )
        for row in results.get("results") or []
        if row["variant"] == "fine-tuned"
    ]
    return yaml.safe_dump(eval_result_entries_to_yaml(entries), sort_keys=False) if entries else None
