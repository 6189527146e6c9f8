"""The ``e2wm`` command line: one subcommand per job, each a typed function whose docstring is its help."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib
import sys
from collections import Counter
from pathlib import Path
from typing import Any, NoReturn

from e2wm.errors import E2WMError, did_you_mean, release, reported
from e2wm.files import output_lock, read_yaml_mapping


def collect(args: argparse.Namespace) -> None:
    """Collect rollouts from an agent into sharded Parquet that datasets.load_dataset("parquet") reads."""
    from e2wm.rollouts.collect import CollectConfig
    from e2wm.rollouts.collect import collect as run_collect

    config = CollectConfig(
        agent=args.agent,
        out=args.out,
        episodes=args.episodes,
        workers=args.workers,
        seed=args.seed,
        shard_size=args.shard_size,
        shard_range=args.shard_range,
        splits=tuple(args.splits),
        scene_graph=args.scene_graph,
    )
    config.mcts.iterations = args.mcts_iterations
    config.explore.length = args.length
    config.explore.people = args.people
    paths = run_collect(config, progress=not args.quiet)
    print(f"{config.agent}: {len(paths)} shard(s) in {config.out}")


def inspect(args: argparse.Namespace) -> None:
    """Summarise rollout shards (one episode of each agent) or a built corpus (one example of each task)."""
    import pyarrow.parquet as pq

    if (Path(args.dir) / "dataset_dict.json").exists():
        _inspect_corpus(args.dir)
        return

    from e2wm.rollouts.shards import shard_files

    files = shard_files(args.dir)
    if not files:
        raise E2WMError(f"{args.dir}: no .parquet shards")
    try:
        rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    except Exception as exc:  # noqa: BLE001  # pyarrow raises several types for a corrupt file
        raise E2WMError(f"{args.dir}: unreadable shard ({exc})") from None
    by_agent = Counter(r["agent"] for r in rows)
    for agent, count in sorted(by_agent.items()):
        episodes = [r for r in rows if r["agent"] == agent]
        steps = sum(r["num_steps"] for r in episodes)
        ok = sum(s["success"] for r in episodes for s in r["steps"])
        splits = dict(sorted(Counter(r["split"] for r in episodes).items()))
        successful = sum(r["success"] for r in episodes)
        print(
            f"{agent}: {count} episodes, {steps} steps ({ok / max(steps, 1):.1%} succeeded), "
            f"{successful} episodes successful, splits {splits}"
        )
    for agent in sorted(by_agent):
        r = next(r for r in rows if r["agent"] == agent and r["num_steps"] > 0)
        print(f"\n--- {r['episode_id']} ({r['activity'] or 'exploration'}) ---")
        print(r["initial_state_text"])
        for s in r["steps"][: args.steps]:
            outcome = s["change_text"] if s["success"] else f"(failed: {s['failure']})"
            print(f"  {s['action_text']:<32} {outcome}")


def _inspect_corpus(directory: str) -> None:
    import datasets

    corpus = datasets.load_from_disk(directory)
    splits = list(corpus)
    counts = {split: Counter(corpus[split]["task"]) for split in splits}
    tasks = sorted(set().union(*counts.values()))
    print(f"{'task':<26}" + "".join(f"{s:>13}" for s in splits))
    for task in tasks:
        print(f"{task:<26}" + "".join(f"{counts[s][task]:>13}" for s in splits))
    print(f"{'total':<26}" + "".join(f"{len(corpus[s]):>13}" for s in splits))
    for task in tasks:
        split = next(s for s in splits if counts[s][task])
        example = corpus[split][corpus[split]["task"].index(task)]
        prompt = example["prompt"] if len(example["prompt"]) < 600 else "..." + example["prompt"][-600:]
        print(f"\n--- {task} ({split}) ---\n{prompt}{example['completion']}")


def run(args: argparse.Namespace) -> None:
    """Execute a program file (activity line, description line, [VERB] <obj> (id) lines) on a scene graph."""
    from e2wm.simulator.text import describe_action, describe_change
    from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator
    from e2wm.simulator.virtualhome.resources import load_json, load_program

    program = load_program(args.program, args.scene_graph)
    graph = load_json(args.scene_graph) if args.scene_graph else program.graphs()[0]
    if isinstance(graph, dict) and "init_graph" in graph:
        graph = graph["init_graph"]
    if args.unity:
        from e2wm.simulator.virtualhome.unity import UnitySimulator

        host, _, port = args.unity.rpartition(":")
        sim = UnitySimulator(host or "127.0.0.1", int(port) if port.isdigit() else 8080)
        sim.reset(graph)
    else:
        sim = VirtualHomeSimulator(graph)
    print(f"{program.activity}: {program.description}")
    for action in program.actions():
        result = sim.step(action)
        view = sim if isinstance(sim, VirtualHomeSimulator) else VirtualHomeSimulator(sim.graph())
        outcome = describe_change(view, result.change) if result.success else f"FAILED: {result.failure}"
        print(f"  {describe_action(action):<32} {outcome}")
        if not result.success:
            raise E2WMError(f"step {action} failed: {result.failure}")


def build(args: argparse.Namespace) -> None:
    """Turn rollout shards into an embodied QA corpus: a datasets.DatasetDict saved to disk with its card."""
    from e2wm.corpus.build import BuildConfig, push
    from e2wm.corpus.build import build as run_build

    config = BuildConfig(
        rollouts=args.rollouts,
        out=args.out,
        tasks=tuple(args.tasks),
        seed=args.seed,
        shots=args.shots,
        train_kshot_share=args.train_kshot_share,
        weights=dict(args.weights),
        jsonl=args.jsonl,
        overwrite=args.overwrite,
    )
    if args.push_to_hub:
        from e2wm.hub.push import check_repo_id

        check_repo_id(args.push_to_hub, "--push-to-hub")  # before the corpus is built, not after
    corpus = run_build(config, progress=not args.quiet)
    for split, ds in corpus.items():
        print(f"{split}: {len(ds)} examples")
    if args.push_to_hub:
        push(corpus, args.out, args.push_to_hub, args.private)
        print(f"pushed to the Hub as dataset {args.push_to_hub}")


def render(args: argparse.Namespace) -> None:
    """Render rollout episodes to top-down videos (NAME.mp4) with timestamped narration (NAME.json)."""
    from e2wm.multimodal.render import RenderConfig, render_rollouts

    config = RenderConfig(size=args.size, fps=args.fps, pause_rate=args.pause_rate)
    paths = render_rollouts(
        args.rollouts,
        args.out,
        args.episodes,
        args.split,
        config,
        args.workers,
        progress=not args.quiet,
        scene_graph=args.scene_graph,
    )
    print(f"{len(paths)} clip(s) in {args.out}")


def stream(args: argparse.Namespace) -> None:
    """Narrate videos with a trained video model, 4 frames at a time, and score it where captions exist."""
    from transformers.utils import logging

    from e2wm.multimodal.evaluate import evaluate_stream, load_narrator

    logging.disable_progress_bar()  # the model's loading bar would interleave with the utterances
    if args.episodes is not None and args.episodes < 1:
        raise E2WMError(f"--episodes must be at least 1, got {args.episodes}")
    narrator = load_narrator(args.model)
    size, fps = narrator.processor.image_size, narrator.fps
    scored = True
    if args.video:
        from e2wm.multimodal.video_io import Clip, load_captions, load_video

        captions_file = Path(args.video).with_suffix(".json")
        scored = captions_file.is_file()
        captions = load_captions(captions_file) if scored else []
        frames, fps = load_video(args.video, size, fps)
        clips = [Clip(Path(args.video).stem, frames, fps, captions)]
    elif args.clips:
        from e2wm.multimodal.video_io import VideoCaptionDirectory

        directory = VideoCaptionDirectory(args.clips, size, fps)
        clips = (directory[i] for i in range(len(directory))[: args.episodes])  # decoded as streamed
    else:
        from e2wm.multimodal.data import rollout_clips
        from e2wm.multimodal.render import RenderConfig

        config = RenderConfig(size=max(16, size + size % 2), fps=round(fps))
        clips = rollout_clips(args.rollouts, args.split, args.episodes, config)
    result = evaluate_stream(
        narrator, clips, args.threshold, args.tolerance, scored=scored, realtime=args.realtime, echo=print
    )
    rate = result["frames_per_s"]
    print(
        f"streamed {result['frames']} frames of {result['clips']} clip(s) in {result['seconds']:.2f} s: "
        f"{rate:.1f} frames/s ({rate / result['fps']:.2f}x real time at {result['fps']:g} fps)"
    )
    if scored:
        print(
            f"temporal precision {result['precision']:.3f} recall {result['recall']:.3f} "
            f"F1 {result['f1']:.3f} ({result['matched']} matched of {result['predicted']} said, "
            f"{result['reference']} captions; tolerance {args.tolerance:g} s)"
        )
        print(
            f"on matched pairs: ROUGE-L {result['rouge_l']:.3f}, "
            f"event-slot accuracy {result['slot_accuracy']:.3f}"
        )


def fisher(args: argparse.Namespace) -> None:
    """Estimate the diagonal Fisher of a model's weights on general text (or its own samples) to a file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from e2wm.training.fisher import estimate_fisher, factor, save_fisher
    from e2wm.training.models import check_model, resolve_model

    if args.samples < 1 or args.max_length < 2 or args.rank < 0:
        raise E2WMError("--samples must be >= 1, --max-length >= 2 and --rank >= 0")
    if args.data not in ("general", "model-samples") and not Path(args.data).exists():
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(args.data)
        except HFValidationError:
            raise E2WMError(f"--data {args.data}: no such directory, nor a Hub dataset id") from None
    check_model(args.model)
    release()  # the input is checked: show what libraries said so far, and the progress from here on
    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    targets = args.targets[0] if args.targets in (["all-linear"], ["all"]) else args.targets
    values, metadata = estimate_fisher(model, tokenizer, args.data, args.samples, args.max_length, targets)
    metadata["model"] = args.model
    if args.rank > 0:
        values, metadata = factor(values, metadata, args.rank)
    save_fisher(args.out, values, metadata)
    print(
        f"Fisher of {len(values)} tensors from {metadata.get('samples')} samples "
        f"({metadata.get('tokens')} tokens) saved to {args.out}"
    )


def evaluate(args: argparse.Namespace) -> None:
    """Evaluate a model (and its fine-tuned adapter against it) on a corpus's test splits and general text."""
    from e2wm.eval.config import EvalConfig
    from e2wm.eval.report import results_table, transfer_table
    from e2wm.eval.run import evaluate as run_eval

    config = EvalConfig(
        model=args.model,
        adapter=args.adapter,
        corpus=args.corpus,
        suite=args.suite,
        splits=tuple(args.splits),
        tasks=tuple(args.tasks) if args.tasks else None,
        limit=args.limit or None,
        seed=args.seed,
        kshot=args.kshot,
        transfer_kshot=not args.no_transfer_kshot,
        normalization=dict(args.normalization),
        mc_form=dict(args.mc_form),
        out=args.out,
        base=not args.no_base,
        backend=args.backend,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
    )
    results = run_eval(config, progress=not args.quiet)
    print(results_table(results))
    if results["transfer"]:
        print(
            "\nTransfer to held-out wordings (relative gain: (fine-tuned - base) / max(base, chance, 0.05)):"
        )
        print(transfer_table(results))
    print(f"\nresults.json, results.md and charts in {config.out}")


def push(args: argparse.Namespace) -> None:
    """Publish a fine-tuned adapter (or the model it merges into), its card and its corpus to the Hub."""
    from e2wm.hub.push import push as run_push

    results = args.results
    if results is None and (Path(args.adapter) / "eval" / "results.json").is_file():
        results = str(Path(args.adapter) / "eval" / "results.json")
    where = run_push(
        args.adapter,
        args.repo_id,
        merge=args.merge,
        private=args.private,
        dataset=args.dataset,
        dataset_repo_id=args.dataset_repo_id,
        dry_run=args.dry_run,
        results=results,
    )
    if args.dry_run:
        files = sorted(p for p in Path(where).iterdir() if p.is_file())
        print(f"dry run: nothing uploaded; the {len(files)} files for {args.repo_id} are in {where}:")
        for path in files:
            print(f"  {path.name:<32} {path.stat().st_size:>12,} bytes")
        if args.dataset:
            print(f"the corpus {args.dataset} would go up as dataset {args.dataset_repo_id}")
    else:
        if args.dataset:
            print(f"pushed {args.dataset} to the Hub as dataset {args.dataset_repo_id}")
        print(f"pushed {args.adapter} to the Hub as model {args.repo_id}: {where}")


def _normalization(text: str) -> tuple[str, str]:
    task, sep, norm = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected TASK=VALUE, got {text!r}")
    return task, norm


def _weight(text: str) -> tuple[str, float]:
    task, _, value = text.partition("=")
    try:
        return task, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected TASK=WEIGHT, got {text!r}") from None


def _shard_range(text: str) -> tuple[int, int]:
    try:
        first, last = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FIRST:LAST shard numbers, got {text!r}") from None
    return first, last


TRAIN_HELP = r"""Fine-tune a causal LM on an e2wm corpus with LoRA (or full fine-tuning) plus EWC.

    e2wm train --config recipes/RECIPE.yaml [--field value ...]
    accelerate launch --config_file accelerate_configs/X.yaml -m e2wm.training.train \
        --config recipes/RECIPE.yaml

Every field of the recipe (e2wm.training.config: ScriptArguments, EWCConfig; TRL's SFTConfig,
ModelConfig) can be given as a flag; `python -m e2wm.training.train --help` lists them all."""

TRAIN_VIDEO_HELP = r"""Train a stage of the video narrator (1: encoder, 2: projector, 3: LoRA) from a recipe.

    e2wm train-video --config recipes/video_stage1_encoder_cpu.yaml [--field value ...]
    accelerate launch --config_file accelerate_configs/cpu.yaml -m e2wm.training.train_video \
        --config recipes/video_stage1_encoder_cpu.yaml

`python -m e2wm.training.train_video --help` lists every field."""


# The config dataclasses flags take their defaults from (module:class), imported when a command runs.
COLLECT = "e2wm.rollouts.collect:CollectConfig"
EXPLORE = "e2wm.agents.explore:ExploreConfig"
MCTS = "e2wm.agents.mcts:MCTSConfig"
BUILD = "e2wm.corpus.build:BuildConfig"
EVAL = "e2wm.eval.config:EvalConfig"
RENDER = "e2wm.multimodal.render:RenderConfig"
EWC = "e2wm.training.config:EWCConfig"
FISHER_TARGETS = "e2wm.training.fisher:DEFAULT_TARGETS"


@dataclasses.dataclass(frozen=True)
class _ConfigDefault:
    """A flag's default, read from a config dataclass's field (``config`` ``module:Class``, ``name``) or a
    module constant (``module:NAME``) once the command is parsed: the configs import torch and more,
    which ``e2wm --help`` and the light commands should not wait for."""

    config: str
    name: str | None = None

    def value(self) -> Any:
        module, attribute = self.config.split(":")
        value = getattr(importlib.import_module(module), attribute)
        if self.name is not None:  # a field of a config dataclass, else the module constant itself
            spec = next(f for f in dataclasses.fields(value) if f.name == self.name)
            value = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default
        return list(value) if isinstance(value, tuple) else value


def build_parser() -> argparse.ArgumentParser:
    from e2wm.rollouts.collect import AGENTS
    from e2wm.splits import SPLITS
    from e2wm.training.recipe import e2wm_version

    parser = Parser(prog="e2wm", description=__doc__)
    parser.add_argument("--version", action="version", version=f"e2wm {e2wm_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    common = Parser(add_help=False)
    common.add_argument(
        "--verbose", action="store_true", help="show library warnings even when the command fails"
    )
    common.add_argument(
        "--config",
        metavar="YAML",
        help="the command's flags as a YAML mapping (--shard-size 8 is shard_size: 8); flags given too win",
    )
    add = functools.partial(sub.add_parser, parents=[common])

    p = add("collect", help=collect.__doc__, description=collect.__doc__)
    p.add_argument(
        "--agent",
        choices=AGENTS,
        default=_ConfigDefault(COLLECT, "agent"),
        help="rollout agent",
    )
    p.add_argument(
        "--episodes",
        type=int,
        default=None,
        help="episodes to collect (default: every program for replay/mcts, 100 for random)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=_ConfigDefault(COLLECT, "workers"),
        help="worker processes",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=_ConfigDefault(COLLECT, "seed"),
        help="run seed: same seed, byte-identical shards",
    )
    p.add_argument(
        "--out",
        default=_ConfigDefault(COLLECT, "out"),
        help="output directory for the shards",
    )
    p.add_argument(
        "--shard-size",
        type=int,
        default=_ConfigDefault(COLLECT, "shard_size"),
        help="episodes per shard",
    )
    p.add_argument(
        "--shard-range",
        type=_shard_range,
        default=None,
        metavar="FIRST:LAST",
        help="make only shards FIRST..LAST-1 (to spread one run over machines)",
    )
    p.add_argument(
        "--splits",
        nargs="+",
        default=_ConfigDefault(COLLECT, "splits"),
        choices=SPLITS,
        help="draw programs and scene graphs from these splits",
    )
    p.add_argument("--scene-graph", default=None, help="random agent: start from this scene graph JSON")
    p.add_argument(
        "--length",
        type=int,
        default=_ConfigDefault(EXPLORE, "length"),
        help="random agent: steps per episode",
    )
    p.add_argument(
        "--people",
        type=int,
        default=_ConfigDefault(EXPLORE, "people"),
        help="random agent: people acting in each episode",
    )
    p.add_argument(
        "--mcts-iterations",
        type=int,
        default=_ConfigDefault(MCTS, "iterations"),
        help="mcts agent: simulations per decision",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=collect)

    from e2wm.corpus.tasks import TASKS

    p = add("build", help=build.__doc__, description=build.__doc__)
    p.add_argument("--rollouts", required=True, help="directory of rollout shards from `e2wm collect`")
    p.add_argument("--out", required=True, help="directory to save the corpus to")
    p.add_argument(
        "--tasks",
        nargs="+",
        default=_ConfigDefault(BUILD, "tasks"),
        metavar="TASK",
        help=f"tasks: {', '.join(TASKS)}",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=_ConfigDefault(BUILD, "seed"),
        help="seed of narration, sampling and distractors",
    )
    p.add_argument(
        "--shots",
        type=int,
        default=_ConfigDefault(BUILD, "shots"),
        help="in-context train examples in prompt_kshot",
    )
    p.add_argument(
        "--train-kshot-share",
        type=float,
        default=_ConfigDefault(BUILD, "train_kshot_share"),
        help="share of short-prompt train examples prompted with prompt_kshot",
    )
    p.add_argument(
        "--weights",
        nargs="*",
        type=_weight,
        default=[],
        metavar="TASK=W",
        help="loss weight per task, stored per example (default 1)",
    )
    p.add_argument("--jsonl", action="store_true", help="also export each split as JSONL under OUT/jsonl/")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument(
        "--push-to-hub", default=None, metavar="REPO", help="upload the corpus as this Hub dataset"
    )
    p.add_argument("--private", action="store_true", help="with --push-to-hub: a private dataset")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=build)

    p = add(
        "train",
        help="fine-tune with LoRA + EWC from a recipe",
        description=TRAIN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    p = add(
        "train-video",
        help="train a stage of the video narrator from a recipe",
        description=TRAIN_VIDEO_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    p = add("fisher", help=fisher.__doc__, description=fisher.__doc__)
    p.add_argument(
        "--model",
        default=_ConfigDefault(EVAL, "model"),
        help="embedded model name, Hub id or local path",
    )
    p.add_argument(
        "--data",
        default=_ConfigDefault(EWC, "fisher_data"),
        help="general (offline English prose), model-samples (the true Fisher), or a dataset",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=_ConfigDefault(EWC, "fisher_samples"),
        help="examples to estimate from",
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=_ConfigDefault(EWC, "fisher_max_length"),
        help="tokens per example",
    )
    p.add_argument(
        "--targets",
        nargs="+",
        default=_ConfigDefault(FISHER_TARGETS),
        help="linear layers LoRA targets (names), or all-linear, or all",
    )
    p.add_argument(
        "--rank",
        type=int,
        default=_ConfigDefault(EWC, "fisher_rank"),
        help="> 0: store each matrix factored at this rank",
    )
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.set_defaults(func=fisher)

    p = add("eval", help=evaluate.__doc__, description=evaluate.__doc__)
    p.add_argument(
        "--model",
        default=_ConfigDefault(EVAL, "model"),
        help="embedded model name, Hub id or local path",
    )
    p.add_argument("--adapter", default=None, help="PEFT adapter directory (from `e2wm train`)")
    p.add_argument(
        "--corpus",
        default=_ConfigDefault(EVAL, "corpus"),
        help="corpus directory from `e2wm build`",
    )
    p.add_argument(
        "--suite",
        default=_ConfigDefault(EVAL, "suite"),
        help="embodied (corpus tests), general (perplexity) or all",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=_ConfigDefault(EVAL, "limit"),
        help="examples per task per split, a seeded sample (0: all)",
    )
    p.add_argument("--out", required=True, help="output directory (results.json, results.md, charts)")
    p.add_argument(
        "--backend",
        default=_ConfigDefault(EVAL, "backend"),
        help="scorer of multiple-choice tasks: e2wm or lm-eval",
    )
    p.add_argument(
        "--normalization",
        nargs="*",
        type=_normalization,
        default=[],
        metavar="TASK=NORM",
        help="multiple-choice scoring per task: sum, mean or unconditional",
    )
    p.add_argument(
        "--mc-form",
        nargs="*",
        type=_normalization,
        default=[],
        metavar="TASK=FORM",
        help="multiple-choice form per task: cloze (no option list), listed or lettered",
    )
    p.add_argument("--kshot", action="store_true", help="prompt with solved train examples first")
    p.add_argument(
        "--no-transfer-kshot", action="store_true", help="score the transfer splits zero-shot only"
    )
    p.add_argument("--no-base", action="store_true", help="with --adapter: skip the base model")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="evaluate these tasks only")
    p.add_argument(
        "--splits",
        nargs="+",
        default=_ConfigDefault(EVAL, "splits"),
        help="test splits: test_seen, test_unseen (train wordings), test_seen_transfer, test_unseen_transfer "
        "(held-out wordings)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=_ConfigDefault(EVAL, "seed"),
        help="seed of the per-task sample",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--batch-size",
        type=int,
        default=_ConfigDefault(EVAL, "batch_size"),
        help="examples per forward pass",
    )
    p.add_argument(
        "--device",
        default=_ConfigDefault(EVAL, "device"),
        help="cpu, cuda, cuda:N, or auto (every GPU if there is one, else cpu)",
    )
    p.add_argument(
        "--dtype",
        default=_ConfigDefault(EVAL, "dtype"),
        help="model weights' dtype; auto: bfloat16 on a GPU, float32 on the CPU",
    )
    p.set_defaults(func=evaluate)

    p = add("inspect", help=inspect.__doc__, description=inspect.__doc__)
    p.add_argument("dir", help="directory of rollout shards, or of a corpus from `e2wm build`")
    p.add_argument("--steps", type=int, default=8, help="steps to show per example episode")
    p.set_defaults(func=inspect)

    p = add("run", help=run.__doc__, description=run.__doc__)
    p.add_argument("program", help="program file")
    p.add_argument(
        "--scene-graph", default=None, help="initial scene graph JSON (default: the program's shipped graph)"
    )
    p.add_argument(
        "--unity",
        default=None,
        metavar="HOST:PORT",
        help="run in a running Unity build of VirtualHome instead of the symbolic simulator",
    )
    p.set_defaults(func=run)

    p = add("render", help=render.__doc__, description=render.__doc__)
    p.add_argument("--rollouts", required=True, help="directory of rollout shards from `e2wm collect`")
    p.add_argument("--out", required=True, help="directory for the clips (finished clips are skipped)")
    p.add_argument("--episodes", type=int, default=None, help="render only the first N episodes (by id)")
    p.add_argument("--split", choices=SPLITS, default=None, help="render only this split's episodes")
    p.add_argument(
        "--size",
        type=int,
        default=_ConfigDefault(RENDER, "size"),
        help="frame width and height in pixels (even)",
    )
    p.add_argument(
        "--fps",
        type=int,
        default=_ConfigDefault(RENDER, "fps"),
        help="frames per second (a step lasts 8 frames)",
    )
    p.add_argument(
        "--pause-rate",
        type=float,
        default=_ConfigDefault(RENDER, "pause_rate"),
        help="chance the scene stands still for 4-16 frames after a step (0: a caption every 8 frames)",
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--scene-graph", default=None, help="scene graph JSON the episodes ran on")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=render)

    p = add("stream", help=stream.__doc__, description=stream.__doc__)
    p.add_argument(
        "--model", required=True, help="video model directory (e2wm.training.train_video stage 2 or 3)"
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", default=None, help="a video file (scored if FILE.json has its captions)")
    source.add_argument("--rollouts", default=None, help="rollout shards, rendered as they are streamed")
    source.add_argument("--clips", default=None, help="directory of clips (NAME.mp4 + NAME.json)")
    p.add_argument("--split", choices=SPLITS, default=None, help="--rollouts: only this split's episodes")
    p.add_argument("--episodes", type=int, default=None, help="--rollouts, --clips: the first N only")
    p.add_argument("--threshold", type=float, default=0.5, help="keep watching while p(<next>) >= this")
    p.add_argument("--tolerance", type=float, default=1.0, help="seconds an utterance may be off its caption")
    p.add_argument("--realtime", action="store_true", help="feed frames at the video's rate, not at once")
    p.set_defaults(func=stream)

    p = add("push", help=push.__doc__, description=push.__doc__)
    p.add_argument("--adapter", required=True, help="adapter directory from `e2wm train`")
    p.add_argument("--repo-id", required=True, metavar="USER/NAME", help="model repo to push to")
    p.add_argument("--merge", action="store_true", help="push the base model with the adapter merged in")
    p.add_argument("--private", action="store_true", help="create the repos private (new repos only)")
    p.add_argument(
        "--results", default=None, help="results.json of `e2wm eval` (default: ADAPTER/eval/results.json)"
    )
    p.add_argument("--dataset", default=None, metavar="DIR", help="also push this corpus from `e2wm build`")
    p.add_argument("--dataset-repo-id", default=None, metavar="ID", help="dataset repo of the corpus")
    p.add_argument("--dry-run", default=None, metavar="DIR", help="write the files to DIR; upload nothing")
    p.set_defaults(func=push)
    for command in sub.choices.values():  # one flag style with train's (TRL's) parser: both spellings work
        for action in list(command._actions):  # noqa: SLF001
            for option in list(action.option_strings):
                alias = "--" + option[2:].replace("-", "_")
                if option.startswith("--") and alias != option:
                    action.option_strings.append(alias)
                    command._option_string_actions[alias] = action  # noqa: SLF001
    return parser


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``e2wm CMD: error: ...``, exit 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["train"], ["train-video"]) and argv[1:2] not in (["-h"], ["--help"]):
        # The training flags belong to TRL's parser (e2wm.training.train, .train_video), not to this one.
        if argv[0] == "train":
            from e2wm.training.train import main as train_main
        else:
            from e2wm.training.train_video import main as train_main

        train_main(argv[1:])
        return
    args = parse_args(argv)
    with reported(args.command, args.verbose), _output_lock(args):
        args.func(args)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The subcommand's arguments: ``--config`` expanded, defaults read from the config dataclasses."""
    parser = build_parser()
    with reported(argv[0] if argv else "", "--verbose" in argv):
        argv = _with_config(parser, argv)
    args = parser.parse_args(argv)
    for name, value in vars(args).items():
        if isinstance(value, _ConfigDefault):
            setattr(args, name, value.value())
    return args


def _with_config(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``argv`` with its ``--config YAML`` replaced by the flags the YAML mapping gives, placed before the
    command line's own flags so that those win; one-line errors for an unreadable file or unknown key."""
    config = next((i for i, a in enumerate(argv) if a == "--config" or a.startswith("--config=")), None)
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001  # argparse keeps them here
    if config is None or argv[0] not in commands:
        return argv
    path = argv[config].partition("=")[2] or (argv[config + 1] if config + 1 < len(argv) else "")
    rest = argv[1:config] + argv[config + (1 if "=" in argv[config] else 2) :]
    mapping = read_yaml_mapping(path, "--config")
    options = {
        o[2:]: action
        for action in commands[argv[0]]._actions  # noqa: SLF001
        for o in action.option_strings
        if o.startswith("--") and o not in ("--help", "--config")
    }
    flags: list[str] = []
    for key, value in mapping.items():
        name = str(key).replace("_", "-")
        if name not in options:
            raise E2WMError(f"--config {path}: unknown key {key!r}{did_you_mean(name, options)}")
        if value is None or value is False:
            continue
        flags.append(f"--{name}")
        if isinstance(options[name], argparse._StoreTrueAction):  # noqa: SLF001
            continue
        if isinstance(value, dict):
            flags += [f"{k}={v}" for k, v in value.items()]
        elif isinstance(value, list):
            flags += [str(v) for v in value]
        else:
            flags.append(str(value))
    return [argv[0], *flags, *rest]


def _output_lock(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """The lock on the command's output (``--out``, or ``--dry-run`` of push): one writer at a time;
    collect runs on separate shard ranges may share a directory."""
    out = getattr(args, "out", None) or getattr(args, "dry_run", None)
    if out is None:
        return contextlib.nullcontext()
    shards = getattr(args, "shard_range", None)
    return output_lock(out, "shards-{}-{}".format(*shards) if shards else "")


if __name__ == "__main__":
    main()
