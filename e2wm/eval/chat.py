"""Prompts rendered with the model's chat template (``e2wm eval --apply-chat-template``).

An example's solved examples (``demos``) are earlier user/assistant turns when the corpus is
conversational (``e2wm build --format conversational``), and text before the question, in the same user
turn, when it is standard. The question is always the last user turn, and the rendering ends with the
template's generation prompt, where the answer (the choice text, without a leading space) continues it.
A conversational corpus is always rendered so: its prompts have no text form of their own, and a model
trained on it saw them only through the template.
"""

from __future__ import annotations

from typing import Any

from e2wm.errors import E2WMError
from e2wm.eval.mc_forms import as_form


def uses_chat(ex: dict[str, Any], apply_chat_template: bool) -> bool:
    """Whether ``ex`` (from ``e2wm.eval.data.prompted``) is rendered with the chat template."""
    return apply_chat_template or isinstance(ex["demos"], list)


def check_template(tokenizer: Any, model: str) -> None:
    """One-line error when the tokenizer has no chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise E2WMError(
            f"model {model} has no chat template: --apply-chat-template (and a conversational corpus) need "
            "one; evaluate a chat model, or a standard corpus without the flag"
        )


def render(tokenizer: Any, demos: str | list[dict[str, str]], question: str) -> str:
    """The chat rendering of ``demos`` (turns, or text before the question) and the question, ending with
    the generation prompt. A BOS the template writes is dropped when the tokenizer adds its own, so the
    scorer's ``tokenizer(text)`` gives the ids the template gives (as TRL trains on)."""
    if isinstance(demos, list):
        messages = [*demos, {"role": "user", "content": question}]
    else:
        messages = [{"role": "user", "content": demos + question}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and tokenizer("")["input_ids"][:1] == [tokenizer.bos_token_id]:
        return text[len(bos) :]
    return text


def chat_form(tokenizer: Any, ex: dict[str, Any], form: str) -> dict[str, Any]:
    """``ex`` in multiple-choice ``form`` (``e2wm.eval.mc_forms.as_form``), the form applied to the question
    alone and the result rendered after the demos."""
    formed = as_form({**ex, "demos": ""}, form)
    return {**formed, "prompt": render(tokenizer, ex["demos"], formed["prompt"])}
