"""The conversational format: ``e2wm build --format conversational`` writes TRL's conversational
prompt-completion rows, training renders them with the chat template and masks the prompt, and
``e2wm eval`` scores chat-rendered prompts (always for such a corpus, with ``--apply-chat-template`` for a
standard one)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import pytest
import transformers
from support.tiny_lm import save_tiny_eval_corpus, tiny_llama
from test_train import argv
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors
from trl import is_conversational

import e2wm.eval.generation as generation
import e2wm.eval.scoring as scoring
from e2wm.cli import main
from e2wm.corpus.build import BuildConfig, build
from e2wm.corpus.read import open_corpus
from e2wm.eval.chat import render
from e2wm.rollouts.collect import CollectConfig, collect
from e2wm.training.config import parse
from e2wm.training.train import load_corpus, mix_replay, train

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = ("housework_qa", "activity_recognition")  # one multiple-choice task, one open-ended
TINY_TASKS = ("housework_qa", "counting")  # the same kinds in support.tiny_lm's eval corpus
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
WORDS = re.compile(r"\w+|[^\w\s]+")  # what the Whitespace pre-tokenizer splits text into


def _user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def _assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rollouts")
    collect(CollectConfig(agent="replay", out=str(out), episodes=30, shard_size=30), progress=False)
    return out


@pytest.fixture(scope="module")
def standard(rollouts, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("standard") / "corpus"
    build(
        BuildConfig(rollouts=str(rollouts), out=str(out), tasks=TASKS, shots=2, train_kshot_share=0.5), False
    )
    return out


@pytest.fixture(scope="module")
def conversational(rollouts, tmp_path_factory) -> Path:
    """The corpus of ``standard``, built by the command line in the conversational format."""
    out = tmp_path_factory.mktemp("conversational") / "corpus"
    flags = ["--rollouts", str(rollouts), "--out", str(out), "--tasks", *TASKS, "--shots", "2"]
    main(["build", *flags, "--train-kshot-share", "0.5", "--format", "conversational", "--quiet"])
    return out


@pytest.fixture(scope="module")
def chat_lm(conversational, tmp_path_factory) -> Path:
    """A tiny random Llama whose word-level vocabulary holds every word of the corpus, with ChatML's two
    turn markers as special tokens and ChatML as its chat template."""
    corpus = open_corpus(str(conversational))
    texts = [m["content"] for ds in corpus.values() for row in ds["prompt_kshot"] for m in row]
    texts += [m["content"] for ds in corpus.values() for row in ds["completion"] for m in row]
    words = sorted({w for text in texts for w in WORDS.findall(text)} | {"user", "assistant"})
    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(specials + words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True) for t in specials])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.chat_template = CHATML
    folder = tmp_path_factory.mktemp("chat_lm")
    tiny_llama(len(tokenizer), max_positions=4096).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def _chat(tokenizer, messages) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


# --- the corpus ------------------------------------------------------------------------------------------


def test_the_conversational_corpus_is_the_standard_one_as_chat_messages(conversational, standard, tmp_path):
    """``load_dataset(DIR)`` gives message lists that TRL takes as conversational, holding the standard
    corpus's texts: the question a user turn, the answer (without its space) an assistant turn, the solved
    examples earlier turns; few-shot train prompts are the multi-turn ones."""
    chat = datasets.load_dataset(str(conversational), cache_dir=str(tmp_path / "cache"))
    plain = open_corpus(str(standard))
    assert sorted(chat) == sorted(plain)
    few_shot = 0
    for split in plain:
        assert len(chat[split]) == len(plain[split])
        for c, p in zip(chat[split], plain[split], strict=True):
            assert is_conversational(c) and is_conversational({"prompt": c["prompt_kshot"]})
            assert c["completion"] == [_assistant(p["completion"].removeprefix(" "))]
            *demos, question = c["prompt_kshot"]
            assert [m["role"] for m in demos] == ["user", "assistant"] * (len(demos) // 2)
            pairs = zip(demos[::2], demos[1::2], strict=True)
            text = "".join(u["content"] + " " + a["content"] + "\n\n" for u, a in pairs)
            assert text + question["content"] == p["prompt_kshot"] and question["role"] == "user"
            if p["prompt"] == p["prompt_kshot"] and demos:  # a train prompt mixed few-shot
                assert c["prompt"] == c["prompt_kshot"] and split == "train"
                few_shot += 1
            else:
                assert c["prompt"] == [_user(p["prompt"])]
            assert (c["task"], c["meta"], c["choices"], c["label"]) == (
                p["task"],
                p["meta"],
                p["choices"],
                p["label"],
            )
    assert few_shot > 0
    card = (conversational / "README.md").read_text()
    assert "conversational prompt-completion format" in card and "--format conversational" in card
    assert "standard prompt-completion format" in (standard / "README.md").read_text()


# --- training --------------------------------------------------------------------------------------------


def test_training_renders_the_chat_template_and_masks_the_prompt(chat_lm, conversational, tmp_path):
    """One step of our trainer on the conversational corpus with replay: every row is the chat rendering of
    prompt + completion, its labels -100 over the rendered prompt (with the generation prompt) and the
    tokens elsewhere; replay passages are assistant turns after an empty user turn."""
    flags = argv(
        chat_lm, conversational, tmp_path / "out", "--max_length", "4096", "--replay_fraction", "0.2"
    )
    script, training, model_args, ewc = parse([*flags, "--max_steps", "1"])
    trainer = train(script, training, model_args, ewc)
    rows = mix_replay(script, load_corpus(script, "train"), training.seed)
    tokenizer = trainer.processing_class
    processed = trainer.train_dataset
    assert len(processed) == len(rows)
    replayed = 0
    for row, done in zip(rows, processed, strict=True):
        replayed += row["prompt"] == [_user("")]
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True)["input_ids"]
        full = tokenizer.apply_chat_template(row["prompt"] + row["completion"])["input_ids"]
        assert full[: len(prompt)] == prompt and tokenizer.unk_token_id not in prompt
        assert done["input_ids"] == full
        assert done["labels"] == [-100] * len(prompt) + full[len(prompt) :]
    assert replayed == round(0.2 / 0.8 * len(load_corpus(script, "train")))
    assert trainer.state.global_step == 1


# --- evaluation ------------------------------------------------------------------------------------------


@pytest.fixture
def scored(monkeypatch) -> dict[str, list]:
    """What the eval hands the scorers: multiple-choice (context, continuations) and generation prompts."""
    seen: dict[str, list] = {"choice": [], "generation": []}
    packed, generate = scoring.packed_logprobs, generation.generate_answers

    def spy_packed(model, tokenizer, items, *args, **kwargs):
        seen["choice"] += [(context, list(continuations)) for context, continuations in items]
        return packed(model, tokenizer, items, *args, **kwargs)

    def spy_generate(model, tokenizer, prompts, *args, **kwargs):
        seen["generation"] += list(prompts)
        return generate(model, tokenizer, prompts, *args, **kwargs)

    monkeypatch.setattr(scoring, "packed_logprobs", spy_packed)
    monkeypatch.setattr(generation, "generate_answers", spy_generate)
    return seen


def _eval(model, corpus, out, tasks, *flags) -> None:
    main(
        ["eval", "--model", str(model), "--corpus", str(corpus), "--suite", "embodied", "--out", str(out)]
        + [
            "--tasks",
            *tasks,
            "--splits",
            "test_seen",
            "test_seen_transfer",
            "--limit",
            "2",
            "--quiet",
            *flags,
        ]
    )


def test_eval_scores_a_conversational_corpus_with_the_chat_template(
    chat_lm, conversational, tmp_path, scored
):
    """Without the flag: questions in their multiple-choice form (cloze: stem and answer label) as the last
    user turn after the solved examples' turns, choices continuing the rendering without a space, the
    unconditional normaliser after "Answer:" as a user turn; open-ended prompts rendered as they are."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(chat_lm)
    out = tmp_path / "eval"
    _eval(chat_lm, conversational, out, TASKS, "--normalization", "housework_qa=unconditional")
    corpus = open_corpus(str(conversational))
    rows = [r for s in ("test_seen", "test_seen_transfer") for r in corpus[s]]
    cloze, open_ended = set(), set()
    for r in rows:
        if r["task"] == "housework_qa":
            meta = json.loads(r["meta"])
            question = _user(f"{meta['stem']}\n{meta['answer_label']}")
            cloze |= {
                (_chat(tokenizer, [*turns[:-1], question]), tuple(r["choices"]))
                for turns in (r["prompt"], r["prompt_kshot"])
            }
        else:
            open_ended |= {_chat(tokenizer, r["prompt"]), _chat(tokenizer, r["prompt_kshot"])}
    normaliser = _chat(tokenizer, [_user("Answer:")])
    choices = [(c, tuple(conts)) for c, conts in scored["choice"] if c != normaliser]
    assert len(choices) == 6 and set(choices) <= cloze  # 2 examples x test_seen, transfer, transfer few-shot
    assert sum(c.count("<|im_start|>user") > 1 for c, _ in choices) == 2  # the few-shot ones
    answers = {a for _, conts in choices for a in conts}
    assert [set(conts) for c, conts in scored["choice"] if c == normaliser] == [answers]
    assert len(scored["generation"]) == 6 and set(scored["generation"]) <= open_ended
    references = {r["completion"][0]["content"] for r in rows}
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 12 and {r["reference"] for r in records} <= references


def test_the_flag_renders_a_standard_corpus_as_one_user_turn(chat_lm, tmp_path, scored):
    corpus = save_tiny_eval_corpus(tmp_path / "tiny")
    tokenizer = transformers.AutoTokenizer.from_pretrained(chat_lm)
    _eval(chat_lm, corpus, tmp_path / "eval", TINY_TASKS, "--apply-chat-template")
    loaded = open_corpus(str(corpus))
    rows = [r for s in ("test_seen", "test_seen_transfer") for r in loaded[s]]
    cloze, open_ended = set(), set()
    for r in rows:
        if r["task"] == "housework_qa":
            meta = json.loads(r["meta"])
            demos = r["prompt_kshot"][: -len(r["prompt"])]
            for text in (
                f"{meta['stem']}\n{meta['answer_label']}",
                f"{demos}{meta['stem']}\n{meta['answer_label']}",
            ):
                cloze.add((_chat(tokenizer, [_user(text)]), tuple(r["choices"])))
        else:
            open_ended |= {
                _chat(tokenizer, [_user(r["prompt"])]),
                _chat(tokenizer, [_user(r["prompt_kshot"])]),
            }
    choices = {(c, tuple(conts)) for c, conts in scored["choice"]}
    assert len(scored["choice"]) == 6 and choices <= cloze
    assert len(scored["generation"]) == 6 and set(scored["generation"]) <= open_ended


def test_render_leaves_the_bos_to_a_tokenizer_that_adds_it(chat_lm):
    """A template that writes BOS, with a tokenizer that adds one: the rendering drops its own, so
    tokenizing it gives the template's ids (one BOS), as training does."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(chat_lm)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.bos_token_id)]
    )
    tokenizer.chat_template = "{{ bos_token }}" + CHATML
    messages = [_user("walk"), _assistant("kitchen")]
    text = render(tokenizer, messages, "grab")
    ids = tokenizer.apply_chat_template([*messages, _user("grab")], add_generation_prompt=True)["input_ids"]
    assert not text.startswith("<s>") and tokenizer(text)["input_ids"] == ids
    assert ids.count(tokenizer.bos_token_id) == 1


@pytest.mark.parametrize(
    ("case", "flags", "message"),
    [
        ("no template, flag", ["--apply-chat-template"], "has no chat template"),
        ("no template, conversational corpus", [], "has no chat template"),
        ("lm-eval backend, flag", ["--apply-chat-template", "--backend", "lm-eval"], "needs --backend e2wm"),
        ("lm-eval backend, conversational corpus", ["--backend", "lm-eval"], "is conversational"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(lm, conversational, tmp_path, capsys, case, flags, message):
    if "conversational" in case:
        corpus, tasks = conversational, TASKS
    else:
        corpus, tasks = save_tiny_eval_corpus(tmp_path / "tiny"), TINY_TASKS
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        _eval(lm, corpus, tmp_path / "out", tasks, *flags)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("e2wm eval: error: ") and message in err, err
    assert not (tmp_path / "out").exists()
