"""How many Fisher samples, how long, and which kind, until the EWC penalty stops moving.

What EWC uses of the Fisher is the penalty it puts on a trained adapter: sum F * dW^2. So this bench
measures the estimate by that number. It estimates the empirical diagonal Fisher of SmolLM2-135M
(embedded) on the general text's "fisher" part, on the LoRA targets of the default recipe, in chunks
of passages (the mean of the first k chunks is the estimate from k chunks' passages, so every size
comes from one pass), and the true Fisher from the model's own samples; then it evaluates the penalty
of an adapter trained by the default recipe (``--adapter``, default the forgetting bench's
``outputs/forgetting/replay0.1_lambda10000``) under each estimate. The reference is the largest
empirical estimate; each row gives the penalty's relative difference from it and the cosine similarity
of the two Fisher vectors.

``--quick`` (under a minute): a 2-layer random Llama, a random adapter, a few passages of 64 tokens.

    python bench/fisher_stability.py [--quick] [--samples 128] [--adapter DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from e2wm.training import general_text  # noqa: E402
from e2wm.training.ewc import lora_penalty  # noqa: E402
from e2wm.training.fisher import compute_fisher  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def chunk_estimates(model, tokenizer, texts: list[str], chunk: int, max_length: int, **kw) -> list[dict]:
    """The Fisher of the first 1, 2, ... chunks of ``texts`` (each a mean over its chunks' passages)."""
    running: dict[str, torch.Tensor] = {}
    estimates = []
    for k in range(0, len(texts), chunk):
        part, _ = compute_fisher(
            model, tokenizer, texts=texts[k : k + chunk], samples=chunk, max_length=max_length, **kw
        )
        for name, f in part.items():
            running[name] = running.get(name, 0) + f
        estimates.append({name: f / (k // chunk + 1) for name, f in running.items()})
    return estimates


def adapter_deltas(adapter: dict[str, torch.Tensor], scale: float) -> dict[str, tuple]:
    """Fisher key (``model.layers.0.self_attn.q_proj.weight``) -> (A, B, scale) of the adapter."""
    out = {}
    for name, a in adapter.items():
        if ".lora_A." in name:
            key = name.replace("base_model.model.", "", 1).replace(".lora_A.weight", ".weight")
            out[key] = (a.float(), adapter[name.replace(".lora_A.", ".lora_B.")].float(), scale)
    return out


def penalty(fisher: dict[str, torch.Tensor], deltas: dict[str, tuple]) -> float:
    return sum(float(lora_penalty(a, b, s, fisher[k])) for k, (a, b, s) in deltas.items() if k in fisher)


def cosine(f: dict[str, torch.Tensor], g: dict[str, torch.Tensor]) -> float:
    dot = sum(float((f[k] * g[k]).sum()) for k in f)
    return (
        dot / (sum(float(f[k].square().sum()) for k in f) * sum(float(g[k].square().sum()) for k in g)) ** 0.5
    )


def setup(quick: bool, adapter_dir: Path) -> tuple:
    import transformers

    if quick:
        sys.path.insert(0, str(ROOT / "bench"))
        from _fisher import make_tokenizer

        texts = general_text.passages("fisher")
        tokenizer = make_tokenizer(texts, vocab_size=1024)
        config = transformers.LlamaConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=0, pad_token_id=0,
        )  # fmt: skip
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config).eval()
        adapter = {}
        for name, module in model.named_modules():
            if name.split(".")[-1] in TARGETS:
                out_f, in_f = module.weight.shape
                prefix = f"base_model.model.{name}"
                adapter[f"{prefix}.lora_A.weight"] = torch.randn(4, in_f) * 0.1
                adapter[f"{prefix}.lora_B.weight"] = torch.randn(out_f, 4) * 0.1
        return model, tokenizer, adapter, 2.0
    import json

    from safetensors.torch import load_file

    from e2wm.training.models import resolve_model

    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise SystemExit(
            f"bench fisher_stability: no adapter in {adapter_dir} (run bench/forgetting.py first)"
        )
    path = resolve_model("smollm2-135m")
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    adapter = load_file(adapter_dir / "adapter_model.safetensors")
    return model.eval(), tokenizer, adapter, config["lora_alpha"] / config["r"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny random stand-ins, under a minute")
    parser.add_argument("--samples", type=int, default=None, help="largest empirical estimate (default 128)")
    parser.add_argument(
        "--adapter", default="outputs/forgetting/replay0.1_lambda10000", help="trained adapter"
    )
    args = parser.parse_args()
    start = time.perf_counter()
    model, tokenizer, adapter, scale = setup(args.quick, Path(args.adapter))
    chunk, length, short = (4, 64, 32) if args.quick else (16, 256, 128)
    total = args.samples or (16 if args.quick else 128)
    texts = general_text.passages("fisher")
    texts = (texts * (total // len(texts) + 1))[:total]
    deltas = adapter_deltas(adapter, scale)
    kw = {"target_modules": TARGETS}
    empirical = chunk_estimates(model, tokenizer, texts, chunk, length, **kw)
    reference = empirical[-1]
    rows = [(f"empirical, {chunk * (k + 1)} x {length} tokens", f) for k, f in enumerate(empirical)]
    half = len(texts) // 2
    rows.append(
        (
            f"empirical, {half} x {short} tokens",
            chunk_estimates(model, tokenizer, texts[:half], half, short, **kw)[-1],
        )
    )
    samples = max(chunk, half // 2)
    model_fisher, _ = compute_fisher(
        model, tokenizer, source="model", samples=samples, max_length=length, **kw
    )
    rows.append((f"model samples (true Fisher), {samples} x {length} tokens", model_fisher))
    base = penalty(reference, deltas)
    print(f"| Fisher estimate | penalty sum F*dW^2 | vs {rows[len(empirical) - 1][0]} | cosine |")
    print("|---|---:|---:|---:|")
    figures = {}
    for label, fisher in rows:
        p = penalty(fisher, deltas)
        figures[label] = (p - base) / base
        print(f"| {label} | {p:.4g} | {figures[label]:+.1%} | {cosine(fisher, reference):.3f} |")
    print(f"({time.perf_counter() - start:.0f} s)")
    half_label = rows[len(empirical) // 2 - 1][0]
    print(
        f"bench fisher_stability: penalty_change_{half_label.split(', ')[1].split(' x')[0]}_samples = "
        f"{figures[half_label]:+.1%} ({1 + figures[half_label]:.2f} x vs {total} samples)"
    )
    model_label = rows[-1][0]
    print(
        f"bench fisher_stability: penalty_change_model_samples = {figures[model_label]:+.1%} "
        f"({1 + figures[model_label]:.2f} x vs empirical {total} samples)"
    )


if __name__ == "__main__":
    main()
