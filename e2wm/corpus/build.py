"""``e2wm build``: rollout shards -> a ``datasets.DatasetDict`` of embodied QA tasks, with its card.

Each episode is re-executed once (``trace_episode``) and every selected task reads that trace. Examples
take the split of their episode (train, validation, test_seen, test_unseen: programs split by base id
and held-out activities, see ``e2wm.splits``), worded by a *train* wording family
(``e2wm.corpus.wording``). Each test episode is also asked in a *held-out* family, into the transfer
splits ``test_seen_transfer`` and ``test_unseen_transfer``; their few-shot demonstrations are train
episodes asked in the same held-out layout, which no split holds. Train and validation examples whose
prompt equals a test prompt, or whose plan is a test plan, are dropped. A share of the train examples is
prompted few-shot: of the short-prompt tasks with all their solved examples (``train_kshot_share``), of
the narrated tracking tasks with the shortest one (``train_kshot_tracking_share``: stories are long).

``format`` chooses how prompts are stored: ``standard`` (TRL's prompt-completion text: the prompt, and
the answer after one space) or ``conversational`` (TRL's conversational prompt-completion: the prompt is a
list of chat messages ending with the question as a user turn, the completion one assistant turn with the
answer; ``prompt_kshot`` gives the solved examples as earlier user/assistant turns), which a trainer renders
with the model's chat template.

The corpus is saved in the Hub's dataset layout, so ``datasets.load_dataset(DIR)``, ``trl sft
--dataset_name DIR`` and a push to the Hub all take the folder as it is: ``data/TASK/SPLIT-*.parquet``, one
file per task and split, and the card's ``configs`` (``all``, the default, and one per task). Examples
are ordered task by task, the order the files read back in. The folder is written under a temporary
name and renamed into place.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from tqdm import tqdm

from e2wm.corpus.card import dataset_card
from e2wm.corpus.context import Context
from e2wm.corpus.tasks import TASKS, TRACKING_TASKS
from e2wm.corpus.trace import trace_episode
from e2wm.corpus.wording import draw
from e2wm.errors import E2WMError, error_line, release
from e2wm.files import staged
from e2wm.rollouts.shards import load_episodes
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator
from e2wm.splits import SPLITS

TRANSFER_SPLITS = ("test_seen_transfer", "test_unseen_transfer")
CORPUS_SPLITS = (*SPLITS, *TRANSFER_SPLITS)
DEMO_POOL = "held_out_demos"  # held-out wordings of train episodes: few-shot material, in no split
FORMATS = ("standard", "conversational")
FEATURES = datasets.Features(
    {
        "task": datasets.Value("string"),
        "prompt": datasets.Value("string"),
        "completion": datasets.Value("string"),
        "choices": datasets.Sequence(datasets.Value("string")),
        "label": datasets.Value("int32"),
        "split_group": datasets.Value("string"),
        "weight": datasets.Value("float32"),
        "episode_id": datasets.Value("string"),
        "length": datasets.Value("int32"),
        "meta": datasets.Value("string"),
        "prompt_kshot": datasets.Value("string"),
    }
)
MESSAGES = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
CONVERSATIONAL_FEATURES = datasets.Features(
    {k: MESSAGES if k in ("prompt", "completion", "prompt_kshot") else v for k, v in FEATURES.items()}
)


@dataclass
class BuildConfig:
    """Where the rollouts are, where the corpus goes, and what it holds."""

    rollouts: str = field(metadata={"help": "directory of rollout shards from `e2wm collect`"})
    out: str = field(metadata={"help": "directory to save the corpus to"})
    tasks: tuple[str, ...] = field(
        default=tuple(TASKS), metadata={"help": f"tasks: {', '.join(TASKS)}", "metavar": "TASK"}
    )
    seed: int = field(default=0, metadata={"help": "seed of narration, sampling and distractors"})
    shots: int = field(default=3, metadata={"help": "in-context train examples in prompt_kshot"})
    train_kshot_share: float = field(
        default=0.2, metadata={"help": "share of short-prompt train examples prompted with prompt_kshot"}
    )
    train_kshot_tracking_share: float = field(
        default=0.1,
        metadata={"help": "share of tracking-task train examples prompted after one solved example"},
    )
    weights: dict[str, float] = field(
        default_factory=dict,
        metadata={"help": "loss weight per task, stored per example (default 1)", "metavar": "TASK=WEIGHT"},
    )
    jsonl: bool = field(default=False, metadata={"help": "also export each split as JSONL under OUT/jsonl/"})
    overwrite: bool = field(default=False, metadata={"help": "replace OUT if it exists"})
    push_to_hub: str | None = field(
        default=None, metadata={"help": "upload the corpus as this Hub dataset", "metavar": "REPO"}
    )
    private: bool = field(default=False, metadata={"help": "with --push-to-hub: a private dataset"})
    format: str = field(
        default="standard",
        metadata={
            "help": "standard (prompt and completion text) or conversational (chat messages, for training "
            "with the model's chat template)",
            "choices": FORMATS,
        },
    )

    def validate(self) -> None:
        unknown = sorted(set(self.tasks) - set(TASKS)) + sorted(set(self.weights) - set(TASKS))
        if unknown:
            raise E2WMError(f"unknown task(s) {', '.join(unknown)}: choose from {', '.join(TASKS)}")
        if not self.tasks:
            raise E2WMError("no tasks selected")
        if self.shots < 0:
            raise E2WMError(f"--shots must be 0 or more, got {self.shots}")
        for name in ("train_kshot_share", "train_kshot_tracking_share"):
            if not 0 <= getattr(self, name) <= 1:
                flag = "--" + name.replace("_", "-")
                raise E2WMError(f"{flag} must be in [0, 1], got {getattr(self, name)}")
        if self.format not in FORMATS:
            raise E2WMError(f"unknown format {self.format!r}: choose one of {', '.join(FORMATS)}")


def build_examples(episodes: list[dict[str, Any]], config: BuildConfig, progress: bool = True) -> list[dict]:
    """Every selected task on every episode, each with its own seeded random stream: in a train wording
    (the episode's split), and for test and train episodes also in a held-out wording (the transfer split,
    or the few-shot pool ``DEMO_POOL``)."""
    context = Context.from_episodes(episodes)
    sim = VirtualHomeSimulator()
    examples = []
    for episode in tqdm(episodes, desc="build", unit="episode", disable=not progress):
        trace = trace_episode(episode, sim)
        split = episode["split"]
        for task in config.tasks:
            rng = random.Random(f"{config.seed}:{episode['episode_id']}:{task}")
            examples += TASKS[task](trace, context, rng, draw(task, "train", rng))
            if split == "validation":
                continue
            rng = random.Random(f"{config.seed}:{episode['episode_id']}:{task}:held_out")
            for e in TASKS[task](trace, context, rng, draw(task, "held_out", rng)):
                e["split"] = f"{split}_transfer" if split.startswith("test") else DEMO_POOL
                examples.append(e)
    return examples


def drop_leaks(examples: list[dict]) -> tuple[list[dict], int]:
    """Drop train/validation examples whose prompt is a test prompt, or whose plan is a test plan."""

    def plan(e: dict) -> str | None:
        return json.loads(e["meta"]).get("plan")

    test = [e for e in examples if e["split"].startswith("test")]
    prompts = {e["prompt"] for e in test}
    plans = {plan(e) for e in test} - {None}
    kept = [
        e
        for e in examples
        if e["split"].startswith("test") or not (e["prompt"] in prompts or plan(e) in plans)
    ]
    return kept, len(examples) - len(kept)


def _layout(e: dict) -> str:
    return json.loads(e["meta"])["wording"]["layout"]


def add_shots(examples: list[dict], shots: int, seed: int) -> None:
    """``prompt_kshot``: ``shots`` solved examples of the task from other episodes, in the same layout when
    there are enough, then the prompt. Demonstrations come from train; for the transfer splits, from the
    held-out wordings of train episodes (``DEMO_POOL``). The demonstrations are kept, as (prompt, completion)
    pairs, in ``shots`` for the conversational format."""
    pools: dict[tuple[str, str], list[dict]] = {}
    for e in examples:
        if e["split"] in ("train", DEMO_POOL):
            pools.setdefault((e["split"], e["task"]), []).append(e)
    for e in examples:
        rng = random.Random(f"{seed}:shots:{e['episode_id']}:{e['task']}:{e['split']}")
        source = DEMO_POOL if e["split"] in (*TRANSFER_SPLITS, DEMO_POOL) else "train"
        pool = [t for t in pools.get((source, e["task"]), []) if t["episode_id"] != e["episode_id"]]
        same = [t for t in pool if _layout(t) == _layout(e)]
        pool = same if len(same) >= shots else pool
        demos = rng.sample(pool, min(shots, len(pool)))
        # pairs taken now: mix_kshot later turns some train prompts (these demos' among them) few-shot
        e["shots"] = [(d["prompt"], d["completion"]) for d in demos]
        e["prompt_kshot"] = _demo_text(e["shots"]) + e["prompt"]


def _demo_text(shots: list[tuple[str, str]]) -> str:
    return "".join(prompt + completion + "\n\n" for prompt, completion in shots)


def mix_kshot(examples: list[dict], share: float, tracking_share: float, seed: int) -> None:
    """Prompt ``share`` of the train examples of the short-prompt tasks with their ``prompt_kshot``, and
    ``tracking_share`` of those of the tracking tasks after the shortest of their solved examples only (a
    story each: three would not fit, and long ones cost training time), so the model also learns to answer
    after solved examples."""
    for e in examples:
        roll = random.Random(f"{seed}:mix:{e['episode_id']}:{e['task']}").random()
        if e["split"] != "train":
            continue
        if e["task"] in TRACKING_TASKS and roll < tracking_share:
            e["shots"] = sorted(e["shots"], key=lambda shot: len(shot[0]))[:1]
            e["prompt_kshot"] = _demo_text(e["shots"]) + e["prompt"]
            e["prompt"] = e["prompt_kshot"]
        elif e["task"] not in TRACKING_TASKS and roll < share:
            e["prompt"] = e["prompt_kshot"]


def as_conversation(e: dict) -> None:
    """Rewrite a finished example (after ``mix_kshot``) in TRL's conversational prompt-completion format:
    the question a user turn, the answer (without its leading space) an assistant turn, and in
    ``prompt_kshot`` (and a few-shot ``prompt``) the solved examples as earlier user/assistant turns."""

    def turn(role: str, content: str) -> dict[str, str]:
        return {"role": role, "content": content}

    demos = _demo_text(e["shots"])
    few_shot = e["prompt"] == e["prompt_kshot"]  # mix_kshot's choice (the same either way without demos)
    turns = [t for p, c in e["shots"] for t in (turn("user", p), turn("assistant", c.removeprefix(" ")))]
    question = turn("user", e["prompt_kshot"][len(demos) :])
    e["prompt_kshot"] = [*turns, question]
    e["prompt"] = e["prompt_kshot"] if few_shot else [question]
    e["completion"] = [turn("assistant", e["completion"].removeprefix(" "))]


def save_parquet(corpus: datasets.DatasetDict, folder: Path) -> None:
    """The Hub's layout: ``data/TASK/SPLIT-00000-of-00001.parquet``, one file per task and split."""
    for split, ds in corpus.items():
        tasks = ds["task"]
        for task in sorted(set(tasks)):
            path = folder / "data" / task / f"{split}-00000-of-00001.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.select([i for i, t in enumerate(tasks) if t == task]).to_parquet(str(path))


def build(config: BuildConfig, progress: bool = True) -> datasets.DatasetDict:
    """Build the corpus and save it (with its card, and JSONL if asked) to ``config.out``."""
    config.validate()
    datasets.disable_progress_bars()
    out = Path(config.out)
    if out.exists() and any(out.iterdir()) and not config.overwrite:
        raise E2WMError(f"{out} exists and is not empty; pass --overwrite to replace it")
    episodes = load_episodes(config.rollouts)
    release()  # the input is checked: show what libraries said so far, and the progress from here on
    examples = build_examples(episodes, config, progress)
    if not examples:
        raise E2WMError(
            f"the rollouts in {config.rollouts} gave no examples for tasks {', '.join(config.tasks)}"
        )
    examples, dropped = drop_leaks(examples)
    add_shots(examples, config.shots, config.seed)
    mix_kshot(examples, config.train_kshot_share, config.train_kshot_tracking_share, config.seed)
    features = FEATURES
    if config.format == "conversational":
        features = CONVERSATIONAL_FEATURES
        for e in examples:
            as_conversation(e)
    for e in examples:
        e["weight"] = config.weights.get(e["task"], 1.0)
    examples.sort(key=lambda e: e["task"])  # stable: each task keeps its order, tasks as the files list
    corpus = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {k: [e[k] for e in examples if e["split"] == split] for k in features}, features=features
            )
            for split in CORPUS_SPLITS
            if any(e["split"] == split for e in examples)
        }
    )
    agents = dict(sorted(Counter(e["agent"] for e in episodes).items()))
    with staged(out) as tmp:
        save_parquet(corpus, tmp)
        (tmp / "README.md").write_text(dataset_card(corpus, config, agents, dropped))
        if config.jsonl:
            (tmp / "jsonl").mkdir()
            for split, ds in corpus.items():
                ds.to_json(str(tmp / "jsonl" / f"{split}.jsonl"), lines=True)
    return corpus


def push(out: str, repo_id: str, private: bool = False) -> None:
    """Upload the corpus folder as it is (its card and ``data/``) to the Hugging Face Hub as a dataset repo
    (token from HF_TOKEN or `hf auth login`)."""
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api = HfApi()
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=out,
            repo_id=repo_id,
            repo_type="dataset",
            allow_patterns=["README.md", "data/**"],
            commit_message="e2wm build: corpus and card",
        )
    except HfHubHTTPError as exc:
        reason = exc.server_message or error_line(exc)
        raise E2WMError(f"push to {repo_id} failed: HTTP {exc.response.status_code}: {reason}") from None
    except httpx2.TransportError as exc:
        raise E2WMError(f"push to {repo_id} failed: cannot reach the Hub ({exc})") from None
