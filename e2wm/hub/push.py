"""``e2wm push``: publish a fine-tuned adapter (or the model it merges into), and its corpus, or a video
model from ``e2wm train-video``, to the Hub.

The folder to upload is staged first: the adapter's safetensors weights and config (with ``merge``, the
merged model as safetensors instead), the tokenizer, the run's ``e2wm_recipe.yaml``, the model card and
results.json; for a video model (stage 2 or 3), its configs, safetensors weights, processor, tokenizer,
``e2wm_recipe.yaml`` if there is one, and its card. Nothing else leaves the machine: no checkpoints,
optimizer states, training_args.bin or other pickles. A dry run writes that folder to a directory; a push
uploads it as one commit, so a failed push leaves no half-uploaded model. The token comes from
``HF_TOKEN`` or ``hf auth login``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import ModelCard

from e2wm.errors import E2WMError, error_line
from e2wm.files import check_safetensors, sha256_file
from e2wm.hub.base_model import base_license, base_model_id, embedded_base
from e2wm.hub.card import model_card
from e2wm.hub.eval_results import eval_results_file, validate_results
from e2wm.training.recipe import RECIPE_NAME, e2wm_version, read_recipe

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "chat_template.jinja", "chat_template.json", "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt",
)  # fmt: skip
CORPUS_COLUMNS = {"prompt", "completion", "task"}
EVAL_RESULTS = ".eval_results/e2wm.yaml"


@dataclass
class PushConfig:
    """``e2wm push``: the adapter, where it goes, and what goes with it."""

    adapter: str = field(
        metadata={
            "help": "adapter from `e2wm train`, or video model from `e2wm train-video`",
            "metavar": "DIR",
        }
    )
    repo_id: str = field(metadata={"help": "model repo to push to", "metavar": "USER/NAME"})
    merge: bool = field(default=False, metadata={"help": "push the base model with the adapter merged in"})
    private: bool = field(default=False, metadata={"help": "create the repos private (new repos only)"})
    results: str | None = field(
        default=None, metadata={"help": "results.json of `e2wm eval` (default: ADAPTER/eval/results.json)"}
    )
    dataset: str | None = field(
        default=None, metadata={"help": "also push this corpus from `e2wm build`", "metavar": "DIR"}
    )
    dataset_repo_id: str | None = field(
        default=None, metadata={"help": "dataset repo of the corpus", "metavar": "ID"}
    )
    dry_run: str | None = field(
        default=None, metadata={"help": "write the files to DIR; upload nothing", "metavar": "DIR"}
    )


def read_adapter(adapter: str | Path) -> dict:
    """The adapter's config, after checking ``adapter`` holds a PEFT adapter with safetensors weights."""
    folder = Path(adapter)
    if not folder.is_dir():
        raise E2WMError(f"{adapter}: no such adapter directory")
    if not (folder / ADAPTER_CONFIG).is_file():
        raise E2WMError(f"{adapter}: no {ADAPTER_CONFIG}; not a PEFT adapter directory")
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise E2WMError(f"{adapter}: no {ADAPTER_WEIGHTS} (only safetensors weights are pushed)")
    check_safetensors(folder / ADAPTER_WEIGHTS, "adapter weights")
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
    except (UnicodeDecodeError, ValueError) as exc:
        raise E2WMError(f"{folder / ADAPTER_CONFIG}: not JSON ({exc})") from None
    if not isinstance(config, dict) or "peft_type" not in config:
        raise E2WMError(f"{folder / ADAPTER_CONFIG}: not a PEFT adapter config (no peft_type)")
    return config


def read_results(path: str | Path, adapter: str | Path) -> dict:
    """``e2wm eval``'s results.json at ``path``, refused unless it scored this very adapter."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise E2WMError(f"{path}: unreadable results ({error_line(exc)})") from None
    try:
        validate_results(results)
    except E2WMError as exc:
        raise E2WMError(f"{path}: {exc}") from None
    if results.get("adapter_sha256") != sha256_file(Path(adapter) / ADAPTER_WEIGHTS):
        raise E2WMError(
            f"{path} scored another adapter ({results.get('adapter') or 'none'}), "
            f"not the weights in {adapter}"
        )
    return results


def read_corpus(directory: str | Path):
    """The corpus in ``directory``: the folder ``e2wm build`` saves (``data/`` and its card)."""
    from e2wm.corpus.read import open_corpus

    folder = Path(directory)
    if not (folder / "data").is_dir() or not (folder / "README.md").is_file():
        raise E2WMError(f"{directory}: not an e2wm corpus (it needs a data/ folder and a README.md card)")
    corpus = open_corpus(str(folder), hub=False)
    for split, ds in corpus.items():
        missing = CORPUS_COLUMNS - set(ds.column_names)
        if missing:
            raise E2WMError(f"{directory}: split {split} lacks column(s) {', '.join(sorted(missing))}")
    return corpus


def base_path(adapter_config: dict, recipe: dict | None) -> str:
    """Where the adapter's base model loads from: its local directory, the embedded model, or a Hub id."""
    name = str(adapter_config.get("base_model_name_or_path") or "")
    if name and Path(name).is_dir():
        return name
    embedded = embedded_base(adapter_config, recipe)
    if embedded:
        from e2wm.training.models import resolve_model

        return resolve_model(embedded)
    if base_model_id(adapter_config, recipe) == name and name:
        return name
    raise E2WMError(
        f"base model {name or '(none named)'} of the adapter not found; merging needs its weights"
    )


def save_merged(adapter: Path, adapter_config: dict, recipe: dict | None, folder: Path) -> None:
    """The base model with the adapter merged in (``merge_and_unload``) as safetensors in ``folder``."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = base_path(adapter_config, recipe)
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype="auto", use_safetensors=True)
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except (OSError, ValueError, RuntimeError) as exc:
        raise E2WMError(f"cannot merge {adapter} into {base}: {error_line(exc)}") from None
    merged.save_pretrained(folder)


def stage(
    adapter: Path,
    folder: Path,
    card: ModelCard,
    adapter_config: dict,
    recipe: dict | None,
    merge: bool = False,
    results_path: Path | None = None,
    eval_results: str | None = None,
) -> None:
    """Write exactly what the model repo should hold to the new directory ``folder``."""
    folder.mkdir(parents=True)
    if merge:
        save_merged(adapter, adapter_config, recipe, folder)
    else:
        shutil.copyfile(adapter / ADAPTER_WEIGHTS, folder / ADAPTER_WEIGHTS)
        hub_id = base_model_id(adapter_config, recipe)
        if hub_id and hub_id != adapter_config.get("base_model_name_or_path"):
            # Name the base by its Hub id, so AutoPeftModelForCausalLM loads it from the Hub.
            config = {**adapter_config, "base_model_name_or_path": hub_id}
            (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        else:
            shutil.copyfile(adapter / ADAPTER_CONFIG, folder / ADAPTER_CONFIG)
    for name in (*TOKENIZER_FILES, RECIPE_NAME):
        if (adapter / name).is_file():
            shutil.copyfile(adapter / name, folder / name)
    if results_path is not None:
        shutil.copyfile(results_path, folder / "results.json")
    if eval_results is not None:  # the Hub's eval-results format, beside the card's model-index
        (folder / EVAL_RESULTS).parent.mkdir()
        (folder / EVAL_RESULTS).write_text(eval_results)
    card.save(folder / "README.md")


def push(
    adapter: str | Path,
    repo_id: str,
    merge: bool = False,
    private: bool = False,
    dataset: str | Path | None = None,
    dataset_repo_id: str | None = None,
    dry_run: str | Path | None = None,
    results: str | Path | None = None,
    token: str | None = None,
) -> str:
    """Push the adapter in ``adapter`` (merged into its base with ``merge``) to the model repo ``repo_id``;
    a video model directory goes up whole (``push_video_model``).

    ``results`` is ``e2wm eval``'s results.json for this adapter; ``dataset`` a corpus directory pushed
    first as the dataset ``dataset_repo_id`` (which alone only names the corpus in the card). With
    ``dry_run`` the folder is written there and nothing is uploaded. Returns the commit URL, or the
    dry-run directory.
    """
    folder = Path(adapter)
    if (folder / "config.json").is_file() and not (folder / ADAPTER_CONFIG).is_file():
        if merge or results is not None or dataset is not None or dataset_repo_id is not None:
            raise E2WMError(
                f"{adapter} holds a whole model: --merge, --results and --dataset* are for adapters"
            )
        return push_video_model(folder, repo_id, private=private, dry_run=dry_run, token=token)
    adapter_config = read_adapter(folder)
    check_repo_id(repo_id, "--repo-id")
    if dataset_repo_id is not None:
        check_repo_id(dataset_repo_id, "--dataset-repo-id")
    if dataset is not None and dataset_repo_id is None:
        raise E2WMError("--dataset needs --dataset-repo-id (the dataset repo to push it to)")
    corpus = read_corpus(dataset) if dataset is not None else None
    scores = read_results(results, folder) if results is not None else None
    recipe, version = read_recipe(folder / RECIPE_NAME) if (folder / RECIPE_NAME).is_file() else (None, None)
    card = model_card(
        folder,
        scores,
        recipe,
        repo_id=repo_id,
        merged=merge,
        dataset_repo_id=dataset_repo_id,
        version=version,
    )
    stage_to = functools.partial(
        stage,
        folder,
        card=card,
        adapter_config=adapter_config,
        recipe=recipe,
        merge=merge,
        results_path=Path(results) if results is not None else None,
        eval_results=eval_results_file(scores, dataset_repo_id),
    )

    def push_dataset() -> None:
        from e2wm.corpus.build import push as push_corpus

        with _token_env(token):
            push_corpus(str(dataset), dataset_repo_id, private)

    kind = "merged model" if merge else "LoRA adapter"
    first = push_dataset if corpus is not None else None
    return _publish(stage_to, card, repo_id, kind, private=private, dry_run=dry_run, token=token, first=first)


def push_video_model(
    model: str | Path,
    repo_id: str,
    private: bool = False,
    dry_run: str | Path | None = None,
    token: str | None = None,
) -> str:
    """Push the video model ``e2wm train-video`` saved in ``model`` (stage 2 or 3) to the model repo
    ``repo_id``, with its processor, tokenizer, recipe (if any) and card; ``dry_run`` as for ``push``."""
    from e2wm.multimodal.publish import read_video_model, stage_video_model, video_model_card

    folder = Path(model)
    config, files = read_video_model(folder)
    check_repo_id(repo_id, "--repo-id")
    recipe, version = read_recipe(folder / RECIPE_NAME) if (folder / RECIPE_NAME).is_file() else (None, None)
    lm = {"base_model_name_or_path": config.text_config.name_or_path}  # the LM, named as an adapter's base
    card = video_model_card(
        config, repo_id, base_model_id(lm, recipe), base_license(lm, recipe)[0], recipe, version
    )
    names = (*files, *TOKENIZER_FILES, RECIPE_NAME)
    stage_to = functools.partial(stage_video_model, folder, card=card, names=names)
    return _publish(stage_to, card, repo_id, "video model", private=private, dry_run=dry_run, token=token)


def _publish(
    stage_to: Callable[[Path], None],
    card: ModelCard,
    repo_id: str,
    kind: str,
    private: bool,
    dry_run: str | Path | None,
    token: str | None,
    first: Callable[[], None] | None = None,
) -> str:
    """Stage the folder with ``stage_to`` and upload it to ``repo_id`` as one commit (or, with ``dry_run``,
    write it there), after ``first`` (the corpus's push). Returns the commit URL or the dry-run directory."""
    if dry_run is not None:
        return _dry_run(Path(dry_run), stage_to)

    from huggingface_hub import HfApi, get_token

    if token is None and get_token() is None:
        raise E2WMError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="e2wm-push-") as tmp:
        staged = Path(tmp) / "model"
        stage_to(staged)
        with hub_errors(repo_id):
            existed = api.repo_exists(repo_id)  # a rejected token stops the push here, before any write
            try:
                card.validate()
            except ValueError as exc:
                raise E2WMError(f"the Hub rejects the model card: {error_line(exc)}") from None
        if first is not None:
            first()
        with hub_errors(repo_id):
            api.create_repo(repo_id, private=private, exist_ok=True)
        try:
            with hub_errors(repo_id):
                commit = api.upload_folder(
                    repo_id=repo_id,
                    folder_path=staged,
                    commit_message=f"Upload {kind} with e2wm {e2wm_version()}",
                    delete_patterns="*",  # the repo then holds exactly the staged folder
                )
        except E2WMError as exc:
            if existed:
                raise
            raise E2WMError(f"{exc}; {_delete_new_repo(api, repo_id)}") from None
    return commit.commit_url


def _dry_run(out: Path, stage_to: Callable[[Path], None]) -> str:
    """Stage the upload into ``out`` (through a temporary directory) instead of uploading it."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise E2WMError(f"{out} exists and is not empty; remove it or choose another --dry-run directory")
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        stage_to(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, out)
    return str(out)


def check_repo_id(value: str, flag: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        value = ""
    if "/" not in value:
        raise E2WMError(f"{flag} must be a Hub repo id like USER/NAME")


@contextlib.contextmanager
def hub_errors(repo_id: str) -> Iterator[None]:
    """HTTP and connection failures as one-line E2WMErrors (no token in them: the Hub never echoes it)."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except HfHubHTTPError as exc:
        reason = exc.server_message or error_line(exc)
        raise E2WMError(f"push to {repo_id} failed: HTTP {exc.response.status_code}: {reason}") from None
    except httpx2.TransportError as exc:
        raise E2WMError(f"push to {repo_id} failed: cannot reach the Hub ({exc})") from None


@contextlib.contextmanager
def _token_env(token: str | None) -> Iterator[None]:
    """``token`` as HF_TOKEN while the corpus is pushed (``e2wm.corpus.build.push`` reads it from there)."""
    if token is None:
        yield
        return
    before = os.environ.get("HF_TOKEN")
    os.environ["HF_TOKEN"] = token
    try:
        yield
    finally:
        if before is None:
            del os.environ["HF_TOKEN"]
        else:
            os.environ["HF_TOKEN"] = before


def _delete_new_repo(api, repo_id: str) -> str:
    """Delete the repo this push created and found no way to fill; says what became of it."""
    try:
        with hub_errors(repo_id):
            api.delete_repo(repo_id)
    except E2WMError:
        return f"the repo it created, {repo_id}, is left empty"
    return f"the repo it had created, {repo_id}, was deleted"
