"""The human-readable side of an eval run: ``results.md`` and two PNG charts, from the results dict.

* ``results.md``: the run's settings, a table (task, metric, split, n, base and fine-tuned with their 95%
  intervals, delta = fine-tuned - base) ending with the general-text retention row (perplexity and its
  relative change), and the tracking tasks by episode length;
* ``base_vs_finetuned.png``: grouped bars per task of its primary metric with 95% error bars, one panel
  per split;
* ``accuracy_by_length.png``: one line per tracking task and variant over the length buckets, one panel
  per split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from e2wm.corpus.tasks import TRACKING_TASKS
from e2wm.eval.config import REPORTED_SPLITS, VARIANTS, primary_metric

COLORS = {"base": "#9e9e9e", "fine-tuned": "#1f77b4"}
LINES = {"base": "--", "fine-tuned": "-"}
NONE = "–"


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return NONE
    return f"{row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def _by_variant(rows: list[dict[str, Any]], *keys: str) -> dict[tuple, dict[str, dict[str, Any]]]:
    """Rows grouped by ``keys`` (in first-seen order), then by variant."""
    grouped: dict[tuple, dict[str, dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(tuple(row[k] for k in keys), {})[row["variant"]] = row
    return grouped


def results_table(results: dict[str, Any]) -> str:
    """Markdown table: one line per (task, metric, split), base vs fine-tuned, then the retention row."""
    lines = [
        "| task | metric | split | n | chance | constant answer | base (95% CI) | fine-tuned (95% CI) "
        "| delta |",
        "|---|---|---|---:|---:|---:|---|---|---:|",
    ]
    for (task, metric, split), variants in _by_variant(results["results"], "task", "metric", "split").items():
        base, tuned = variants.get("base"), variants.get("fine-tuned")
        delta = f"{tuned['value'] - base['value']:+.3f}" if base and tuned else NONE
        n = (tuned or base)["n"]
        chance, constant = ((tuned or base).get(k) for k in ("chance", "constant"))
        chance, constant = (NONE if v is None else f"{v:.3f}" for v in (chance, constant))
        lines.append(
            f"| {task} | {metric} | {split} | {n} | {chance} | {constant} | {_cell(base)} | {_cell(tuned)} "
            f"| {delta} |"
        )
    for (source,), variants in _by_variant(results["retention"], "source").items():
        base, tuned = variants.get("base"), variants.get("fine-tuned")
        ppl = {v: f"{row['perplexity']:.2f}" for v, row in variants.items()}
        change = tuned["relative_change"] if tuned else None
        lines.append(
            f"| retention ({source} text) | perplexity | {NONE} | {(tuned or base)['tokens']} tokens "
            f"| {NONE} | {NONE} | "
            f"{ppl.get('base', NONE)} | {ppl.get('fine-tuned', NONE)} | "
            f"{NONE if change is None else f'{change:+.1%}'} |"
        )
    return "\n".join(lines)


def transfer_table(results: dict[str, Any]) -> str:
    """Markdown table of the transfer summary: one line per transfer split (zero- and few-shot)."""
    lines = [
        "| split | tasks | mean relative gain | better | better beyond 95% CI | worse beyond 95% CI "
        "| fine-tuned above a blind guess |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in results.get("transfer", []):
        lines.append(
            f"| {s['split']} | {s['n_tasks']} | {s['mean_relative_gain']:+.1%} | {s['better']} | "
            f"{s['better_beyond_interval']} | {s['worse_beyond_interval']} | "
            f"{s.get('above_blind', NONE)} |"
        )
    return "\n".join(lines)


def length_table(results: dict[str, Any]) -> str:
    """Markdown table of the tracking tasks by episode-length bucket."""
    lines = [
        "| task | metric | split | length | n | base (95% CI) | fine-tuned (95% CI) |",
        "|---|---|---|---|---:|---|---|",
    ]
    grouped = _by_variant(results["by_length"], "task", "metric", "split", "bucket")
    for (task, metric, split, bucket), variants in grouped.items():
        base, tuned = variants.get("base"), variants.get("fine-tuned")
        n = (tuned or base)["n"]
        lines.append(f"| {task} | {metric} | {split} | {bucket} | {n} | {_cell(base)} | {_cell(tuned)} |")
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    """The whole ``results.md``."""
    settings = [
        f"- model: `{results['model']}`",
        f"- adapter: `{results['adapter']}`"
        + (f" (sha256 {results['adapter_sha256'][:12]}…)" if results["adapter_sha256"] else ""),
        f"- corpus: `{results['corpus']}`"
        + (f" (fingerprint {results['corpus_fingerprint'][:12]}…)" if results["corpus_fingerprint"] else ""),
        f"- suite: {results['suite']}, backend: {results['backend']}, limit per task and split: "
        f"{results['limit'] or 'none'}, {'k-shot' if results['kshot'] else 'zero-shot'} prompts",
        f"- created: {results['created']}",
    ]
    parts = ["# e2wm eval results", "\n".join(settings)]
    if results.get("transfer"):
        parts += [
            "## Transfer (held-out wordings)\n\nRelative gain per task: (fine-tuned - base) / "
            "max(base, chance, 0.05) on its primary metric. The constant answer is the train answer that "
            "scores best when given to every question (a learned answer prior); a blind guess scores the "
            "better of it and chance: what a model scores that reads nothing of the question.",
            transfer_table(results),
        ]
    parts += ["## All results", results_table(results)]
    if results["by_length"]:
        parts += ["## Tracking tasks by episode length", length_table(results)]
    return "\n\n".join(parts) + "\n"


def _new_figure(panels: int, width: float) -> tuple[Figure, list[Any]]:
    fig = Figure(figsize=(width, 3.6 * max(panels, 1)), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(max(panels, 1), 1, i + 1) for i in range(max(panels, 1))]


def _splits(rows: list[dict[str, Any]]) -> list[str]:
    return [s for s in REPORTED_SPLITS if any(r["split"] == s for r in rows)]


def plot_base_vs_finetuned(results: dict[str, Any], path: Path) -> None:
    """Grouped bars per task (its primary metric), one bar per variant, 95% error bars; a panel per split."""
    rows = [r for r in results["results"] if r["metric"] == primary_metric(r["task"])]
    splits = _splits(rows)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = _new_figure(len(splits), max(6.0, 0.9 * len(tasks) + 2))
    if not rows:
        axes[0].text(0.5, 0.5, "no embodied results", ha="center", va="center")
        axes[0].set_axis_off()
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    width = 0.8 / max(len(variants), 1)
    for ax, split in zip(axes, splits, strict=False):
        cells = {(r["task"], r["variant"]): r for r in rows if r["split"] == split}
        for k, variant in enumerate(variants):
            xs, heights, errors = [], [], ([], [])
            for x, task in enumerate(tasks):
                row = cells.get((task, variant))
                if row is not None:
                    xs.append(x + (k - (len(variants) - 1) / 2) * width)
                    heights.append(row["value"])
                    errors[0].append(max(0.0, row["value"] - row["ci_low"]))  # >= 0 despite rounding
                    errors[1].append(max(0.0, row["ci_high"] - row["value"]))
            ax.bar(xs, heights, width, yerr=errors, capsize=2, color=COLORS[variant], label=variant)
        ax.set_xticks(range(len(tasks)))
        ax.set_xticklabels(
            [f"{t}\n({primary_metric(t)})" for t in tasks], rotation=45, ha="right", fontsize=7
        )
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("score")
        ax.set_title(split)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)


def plot_by_length(results: dict[str, Any], path: Path) -> None:
    """One line per tracking task and variant over the length buckets; a panel per split."""
    rows = results["by_length"]
    splits = _splits(rows)
    fig, axes = _new_figure(len(splits), 8.0)
    if not rows:
        axes[0].text(0.5, 0.5, "no tracking-task results", ha="center", va="center")
        axes[0].set_axis_off()
    buckets = sorted({(r["low"], r["bucket"]) for r in rows})
    position = {label: i for i, (_, label) in enumerate(buckets)}
    colors = {task: f"C{i}" for i, task in enumerate(TRACKING_TASKS)}
    for ax, split in zip(axes, splits, strict=False):
        for (task, variant), points in _lines([r for r in rows if r["split"] == split]).items():
            ax.plot(
                [position[r["bucket"]] for r in points],
                [r["value"] for r in points],
                LINES[variant],
                marker="o",
                color=colors[task],
                label=f"{task} ({variant})",
            )
        ax.set_xticks(range(len(buckets)))
        ax.set_xticklabels([label for _, label in buckets])
        ax.set_xlabel("episode steps the question covers")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("score")
        ax.set_title(split)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.savefig(path, dpi=120)


def _lines(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(task, variant) -> its rows by bucket, in task then variant order."""
    lines: dict[tuple[str, str], list[dict[str, Any]]] = {}
    order = sorted(
        rows, key=lambda r: (TRACKING_TASKS.index(r["task"]), VARIANTS.index(r["variant"]), r["low"])
    )
    for row in order:
        lines.setdefault((row["task"], row["variant"]), []).append(row)
    return lines


def write_report(results: dict[str, Any], directory: Path) -> None:
    """``results.md``, ``base_vs_finetuned.png`` and ``accuracy_by_length.png`` into ``directory``."""
    (directory / "results.md").write_text(markdown(results))
    plot_base_vs_finetuned(results, directory / "base_vs_finetuned.png")
    plot_by_length(results, directory / "accuracy_by_length.png")
