"""Summaries of scored examples: means with 95% intervals, rows by task, split and length bucket, the
transfer summary (relative gains against base), and the retention rows."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from e2wm.corpus.build import TRANSFER_SPLITS
from e2wm.corpus.tasks import TASKS, TRACKING_TASKS
from e2wm.eval.config import (
    KSHOT_SUFFIX,
    PROPORTIONS,
    REPORTED_SPLITS,
    VARIANTS,
    primary_metric,
)
from e2wm.eval.scoring import Z_95, wilson_interval


def mean_interval(values: Sequence[float], z: float = Z_95) -> tuple[float, float]:
    """Normal-approximation interval of the mean of values in [0, 1], clipped to [0, 1]."""
    n = len(values)
    if n < 2:
        return 0.0, 1.0
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = z * sd / math.sqrt(n)
    return max(0.0, mean - half), min(1.0, mean + half)


def summary_row(metric: str, values: Sequence[float], chances: Sequence[float] = ()) -> dict[str, Any]:
    """value (the mean), n and the 95% interval of one metric's per-example values; with ``chances`` (the
    per-example chance levels of multiple choice), their mean as ``chance``."""
    n, value = len(values), sum(values) / len(values)
    low, high = wilson_interval(round(sum(values)), n) if metric in PROPORTIONS else mean_interval(values)
    # the interval holds the value exactly, whatever the rounding
    row = {"metric": metric, "value": value, "n": n, "ci_low": min(low, value), "ci_high": max(high, value)}
    if chances:
        row["chance"] = sum(chances) / len(chances)
    return row


def length_buckets(edges: Sequence[int]) -> list[tuple[str, int, int | None]]:
    """(label, low, high) per bucket: 1..edges[0], edges[0]+1..edges[1], ..., then edges[-1]+1 and up."""
    bounds = [1, *(e + 1 for e in edges)]
    buckets = [(f"{low}-{high - 1}", low, high - 1) for low, high in zip(bounds, bounds[1:], strict=False)]
    return [*buckets, (f"{bounds[-1]}+", bounds[-1], None)]


def _bucket(length: int, buckets: list[tuple[str, int, int | None]]) -> tuple[str, int, int | None]:
    return next((b for b in buckets if b[2] is not None and length <= b[2]), buckets[-1])


_METRIC_ORDER = ("accuracy", "rouge_l", "exact_match", "path_overlap", "executability", "goal_success")


def row_order(row: dict[str, Any]) -> tuple:
    return (
        VARIANTS.index(row["variant"]),
        list(TASKS).index(row["task"]),
        REPORTED_SPLITS.index(row["split"]),
        _METRIC_ORDER.index(row["metric"]),
        row.get("low", 0),
    )


def summarize(records: Sequence[dict[str, Any]], edges: Sequence[int]) -> tuple[list[dict], list[dict]]:
    """(results rows, by_length rows) of per-example records, in a stable order."""
    groups: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    chances: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    by_length: dict[tuple[str, str, str, str, tuple], list[float]] = defaultdict(list)
    buckets = length_buckets(edges)
    for r in records:
        for metric, value in r["scores"].items():
            groups[(r["variant"], r["task"], r["split"], metric)].append(value)
            if "chance" in r:
                chances[(r["variant"], r["task"], r["split"], metric)].append(r["chance"])
        if r["task"] in TRACKING_TASKS:
            metric = primary_metric(r["task"])
            key = (r["variant"], r["task"], r["split"], metric, _bucket(r["length"], buckets))
            by_length[key].append(r["scores"][metric])
    rows = [
        {"variant": v, "task": t, "split": s, **summary_row(m, values, chances.get((v, t, s, m), ()))}
        for (v, t, s, m), values in groups.items()
    ]
    length_rows = []
    for (v, t, s, m, (label, low, high)), values in by_length.items():
        row = {"variant": v, "task": t, "split": s, **summary_row(m, values)}
        length_rows.append({**row, "bucket": label, "low": low, "high": high})
    return sorted(rows, key=row_order), sorted(length_rows, key=row_order)


RELATIVE_FLOOR = 0.05  # a relative gain is taken against at least this score (and at least chance)


def transfer_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per transfer split (zero- and few-shot): each task's primary metric, base vs fine-tuned, its relative
    gain (fine-tuned - base) / max(base, chance, 0.05), and over the tasks their mean, how many got better,
    how many got worse beyond the interval (fine-tuned ci_high below the base score), and how many the
    fine-tuned model scores above a blind guess: the better of chance and the constant answer
    (``e2wm.eval.constant``), what a model scores that reads nothing of the question."""
    cells: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for r in rows:
        if r["split"].removesuffix(KSHOT_SUFFIX) in TRANSFER_SPLITS and r["metric"] == primary_metric(
            r["task"]
        ):
            cells[(r["split"], r["task"])][r["variant"]] = r
    summary = []
    for split in REPORTED_SPLITS:
        tasks = []
        for task in TASKS:
            pair = cells.get((split, task), {})
            if len(pair) < 2:
                continue
            base, tuned = pair["base"], pair["fine-tuned"]
            floor = max(base["value"], base.get("chance", 0.0), RELATIVE_FLOOR)
            tasks.append(
                {
                    "task": task,
                    "metric": base["metric"],
                    "base": base["value"],
                    "fine_tuned": tuned["value"],
                    "relative_gain": (tuned["value"] - base["value"]) / floor,
                    "better": tuned["value"] > base["value"],
                    "better_beyond_interval": tuned["ci_low"] > base["value"],
                    "worse_beyond_interval": tuned["ci_high"] < base["value"],
                    "blind": max(base.get("chance", 0.0), base.get("constant", 0.0)),
                }
            )
        if tasks:
            summary.append(
                {
                    "split": split,
                    "tasks": tasks,
                    "mean_relative_gain": sum(t["relative_gain"] for t in tasks) / len(tasks),
                    "better": sum(t["better"] for t in tasks),
                    "better_beyond_interval": sum(t["better_beyond_interval"] for t in tasks),
                    "worse_beyond_interval": sum(t["worse_beyond_interval"] for t in tasks),
                    "above_blind": sum(t["fine_tuned"] > t["blind"] for t in tasks),
                    "n_tasks": len(tasks),
                }
            )
    return summary


def retention_rows(perplexities: dict[tuple[str, str], Any]) -> list[dict[str, Any]]:
    """One row per (variant, text source); the fine-tuned row's relative change is against the base on the
    same source (None without it)."""
    rows = []
    for (variant, source), result in perplexities.items():
        base = perplexities.get(("base", source))
        change = None
        if variant == "fine-tuned" and base is not None:
            change = (result.perplexity - base.perplexity) / base.perplexity
        rows.append(
            {
                "variant": variant,
                "source": source,
                "perplexity": result.perplexity,
                "tokens": result.tokens,
                "relative_change": change,
            }
        )
    return rows
