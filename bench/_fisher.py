"""Fisher speed: examples/s of the hook-based per-example Fisher vs the batch-size-1 loop, in one run.

Both estimate the same thing on the same examples (checked equal): the empirical diagonal Fisher of
the q_proj/v_proj weights on the general text (``e2wm.training.general_text`` part ``"fisher"``), max_length
128. Ours (``e2wm.training.fisher.compute_fisher``) runs batches of 8 and gets per-example weight
gradients from hooks (g_i^T x_i); the baseline (``compute_fisher(..., batch_size=None)``) runs one example at
a time with an ordinary backward, gradients only for the targets (the fair loop: no gradients for the
other weights).

The model has SmolLM2-135M's shape (Llama, hidden 576, 30 layers, 9 heads / 3 KV heads, MLP 1536,
vocabulary 49,152, tied embeddings; 135M parameters), randomly initialised from the config: no
download. The tokenizer is a byte-level BPE (8,192 tokens) trained in a fraction of a second on the
general text itself. The passages are long, so nearly every example is the full 128 tokens.

The two methods are timed in alternating rounds and each is scored by its best round (seconds per
example), which is robust to other work sharing the CPU. On a GPU (used when there is one) batch-1
forward/backward passes are latency-bound and batching pays off most; on a CPU of two cores a
batch-1 pass at 128 tokens already keeps the cores busy, and the gain is far smaller. Measured on
2 CPU cores (shared): ours about 2.8-3.0 examples/s, 1.0-1.2x the loop (about 1.5x a naive loop that
computes every weight's gradient), short of the 4x target: both are matmul-bound there, and the
per-example gradients themselves cost little.

Run through ``bench/ewc.py``, which prints its headline line.
"""

from __future__ import annotations

import time

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from e2wm.training import general_text
from e2wm.training.fisher import compute_fisher

BATCH_SIZE = 8
MAX_LENGTH = 128


def make_tokenizer(texts: list[str], vocab_size: int = 8192) -> transformers.PreTrainedTokenizerFast:
    """Byte-level BPE trained on the texts (offline), BOS prepended."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<|im_start|> $A", special_tokens=[("<|im_start|>", 1)]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def make_model(device: str) -> transformers.LlamaForCausalLM:
    """SmolLM2-135M's architecture, random weights."""
    config = transformers.LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).to(device).eval()


def timed(fn, device: str) -> tuple[float, tuple]:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def measure(quick: bool, device: str) -> tuple[float, float]:
    """Examples/s of ``compute_fisher`` and its speed-up over the reference loop (``batch_size=None``), best
    rounds, checked equal."""
    texts = general_text.passages("fisher")
    tokenizer = make_tokenizer(texts)
    model = make_model(device)
    rounds = 2 if quick else 4
    ours_n = BATCH_SIZE if quick else 4 * BATCH_SIZE  # examples per round
    loop_n = 4 if quick else 8
    common = dict(texts=texts, source="empirical", max_length=MAX_LENGTH, target_modules=["q_proj", "v_proj"])

    # Warm-up (allocator, kernels), then check the two agree on the same examples.
    compute_fisher(model, tokenizer, samples=2, batch_size=2, seed=99, **common)
    compute_fisher(model, tokenizer, batch_size=None, samples=1, seed=99, **common)

    ours_s: list[float] = []
    loop_s: list[float] = []
    for r in range(rounds):
        # The first round runs the loop on the same examples as ours (the first `samples` of a seeded order
        # are the same for any count), to check the estimates; later rounds time fewer loop examples.
        n_loop = ours_n if r == 0 else loop_n
        seconds, (ours, _) = timed(
            lambda r=r: compute_fisher(
                model, tokenizer, samples=ours_n, batch_size=BATCH_SIZE, seed=r, **common
            ),
            device,
        )
        ours_s.append(seconds / ours_n)
        seconds, (ref, _) = timed(
            lambda r=r, n=n_loop: compute_fisher(
                model, tokenizer, batch_size=None, samples=n, seed=r, **common
            ),
            device,
        )
        loop_s.append(seconds / n_loop)
        if r == 0:
            for name in ours:
                torch.testing.assert_close(ours[name], ref[name], rtol=1e-3, atol=1e-12, msg=name)
    return 1 / min(ours_s), min(loop_s) / min(ours_s)
