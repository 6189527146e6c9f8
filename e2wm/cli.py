"""The ``e2wm`` command line: one subcommand per job, each a typed function whose docstring is its help."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from e2wm.errors import E2WMError, did_you_mean, release, reported
from e2wm.files import output_lock, read_yaml_mapping
from e2wm.flags import add_flags, config_from
from e2wm.memory import keep_freed_memory


@dataclasses.dataclass
class InspectConfig:
    """``e2wm inspect``: what to summarise."""

    dir: str = dataclasses.field(
        metadata={"help": "directory of rollout shards, or of a corpus from `e2wm build`", "positional": True}
    )
    steps: int = dataclasses.field(default=8, metadata={"help": "steps to show per example episode"})


@dataclasses.dataclass
class RunConfig:
    """``e2wm run``: a program, the scene it starts in, and the simulator that runs it."""

    program: str = dataclasses.field(metadata={"help": "program file", "positional": True})
    scene_graph: str | None = dataclasses.field(
        default=None, metadata={"help": "initial scene graph JSON (default: the program's shipped graph)"}
    )
    unity: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "run in a running Unity build of VirtualHome instead of the symbolic simulator",
            "metavar": "HOST:PORT",
        },
    )


def collect(config: Any, quiet: bool) -> None:
    """Collect rollouts from an agent into sharded Parquet that datasets.load_dataset("parquet") reads."""
    from e2wm.rollouts.collect import collect as run_collect

    paths = run_collect(config, progress=not quiet)
    print(f"{config.agent}: {len(paths)} shard(s) in {config.out}")


def inspect(config: InspectConfig, quiet: bool) -> None:
    """Summarise rollout shards (one episode of each agent) or a built corpus (one example of each task)."""
    import pyarrow.parquet as pq

    if (Path(config.dir) / "data").is_dir() or (Path(config.dir) / "dataset_dict.json").exists():
        _inspect_corpus(config.dir)
        return

    from e2wm.rollouts.shards import shard_files

    files = shard_files(config.dir)
    if not files:
        raise E2WMError(f"{config.dir}: no .parquet shards")
    try:
        rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    except Exception as exc:  # noqa: BLE001  # pyarrow raises several types for a corrupt file
        raise E2WMError(f"{config.dir}: unreadable shard ({exc})") from None
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
        for s in r["steps"][: config.steps]:
            outcome = s["change_text"] if s["success"] else f"(failed: {s['failure']})"
            print(f"  {s['action_text']:<32} {outcome}")


def _inspect_corpus(directory: str) -> None:
    from e2wm.corpus.read import open_corpus

    corpus = open_corpus(directory, hub=False)
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


def run(config: RunConfig, quiet: bool) -> None:
    """Execute a program file (activity line, description line, [VERB] <obj> (id) lines) on a scene graph."""
    from e2wm.simulator.text import describe_action, describe_change
    from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator
    from e2wm.simulator.virtualhome.resources import load_json, load_program

    program = load_program(config.program, config.scene_graph)
    graph = load_json(config.scene_graph) if config.scene_graph else program.graphs()[0]
    if isinstance(graph, dict) and "init_graph" in graph:
        graph = graph["init_graph"]
    if config.unity:
        from e2wm.simulator.virtualhome.unity import UnitySimulator

        host, _, port = config.unity.rpartition(":")
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


def build(config: Any, quiet: bool) -> None:
    """Turn rollout shards into an embodied QA corpus: a datasets.DatasetDict saved to disk with its card."""
    from e2wm.corpus.build import build as run_build
    from e2wm.corpus.build import push

    if config.push_to_hub:
        from e2wm.hub.push import check_repo_id

        check_repo_id(config.push_to_hub, "--push-to-hub")  # before the corpus is built, not after
    corpus = run_build(config, progress=not quiet)
    for split, ds in corpus.items():
        print(f"{split}: {len(ds)} examples")
    if config.push_to_hub:
        push(config.out, config.push_to_hub, config.private)
        print(f"pushed to the Hub as dataset {config.push_to_hub}")


def render(config: Any, quiet: bool) -> None:
    """Render rollout episodes to top-down videos (NAME.mp4) with timestamped narration (NAME.json)."""
    from e2wm.multimodal.render import render_rollouts

    paths = render_rollouts(
        config.rollouts,
        config.out,
        config.episodes,
        config.split,
        config.look,
        config.workers,
        progress=not quiet,
        scene_graph=config.scene_graph,
    )
    print(f"{len(paths)} clip(s) in {config.out}")


def stream(config: Any, quiet: bool) -> None:
    """Narrate videos with a trained video model, 4 frames at a time, answer questions asked mid-stream, and
    score both where the video has references."""
    from transformers.utils import logging

    from e2wm.multimodal.evaluate import evaluate_stream, load_narrator

    logging.disable_progress_bar()  # the model's loading bar would interleave with the utterances
    config.validate()
    narrator = load_narrator(config.model)
    size, fps = narrator.processor.image_size, narrator.fps
    scored = True
    if config.video:
        from e2wm.multimodal.video_io import Clip, load_annotations, load_video

        captions_file = Path(config.video).with_suffix(".json")
        scored = captions_file.is_file()
        captions, questions = load_annotations(captions_file) if scored else ([], [])
        frames, fps = load_video(config.video, size, fps)
        clips = [Clip(Path(config.video).stem, frames, fps, captions, questions)]
    elif config.clips:
        from e2wm.multimodal.video_io import VideoCaptionDirectory

        directory = VideoCaptionDirectory(config.clips, size, fps)
        clips = (directory[i] for i in range(len(directory))[: config.episodes])  # decoded as streamed
    else:
        from e2wm.multimodal.data import rollout_clips
        from e2wm.multimodal.render import RenderConfig

        video = narrator.model.config.video_config
        look = RenderConfig(
            size=max(16, size + size % 2),
            fps=round(fps),
            style=video.render_style,
            layout_seed=config.layout_seed,
        )
        clips = rollout_clips(config.rollouts, config.split, config.episodes, look)
    result = evaluate_stream(
        narrator,
        clips,
        config.threshold,
        config.tolerance,
        scored=scored,
        realtime=config.realtime,
        echo=print,
        questions=config.questions,
        asked=config.asked(),
        video_blind=config.video_blind,
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
            f"{result['reference']} captions; tolerance {config.tolerance:g} s)"
        )
        print(
            f"on matched pairs: ROUGE-L {result['rouge_l']:.3f}, "
            f"event-slot accuracy {result['slot_accuracy']:.3f} (verb {result['verb_accuracy']:.3f}, "
            f"object {result['object_accuracy']:.3f})"
        )
    if result.get("questions"):
        kinds = ", ".join(f"{k} {v:.3f}" for k, v in result["question_accuracy_by_kind"].items())
        print(f"questions: accuracy {result['question_accuracy']:.3f} of {result['questions']} ({kinds})")
    elif config.questions:
        print("questions: the clips have none to ask")


def fisher(config: Any, quiet: bool) -> None:
    """Estimate the diagonal Fisher of a model's weights on general text (or its own samples) to a file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from e2wm.training.fisher import estimate_fisher, factor, save_fisher
    from e2wm.training.models import check_model, resolve_model

    config.validate()
    check_model(config.model)
    release()  # the input is checked: show what libraries said so far, and the progress from here on
    path = resolve_model(config.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    targets = config.targets[0] if config.targets in (("all-linear",), ("all",)) else list(config.targets)
    values, metadata = estimate_fisher(
        model, tokenizer, config.data, config.samples, config.max_length, targets
    )
    metadata["model"] = config.model
    if config.rank > 0:
        values, metadata = factor(values, metadata, config.rank)
    save_fisher(config.out, values, metadata)
    print(
        f"Fisher of {len(values)} tensors from {metadata.get('samples')} samples "
        f"({metadata.get('tokens')} tokens) saved to {config.out}"
    )


def evaluate(config: Any, quiet: bool) -> None:
    """Evaluate a model (and its fine-tuned adapter against it) on a corpus's test splits and general text."""
    from e2wm.eval.report import results_table, transfer_table
    from e2wm.eval.run import evaluate as run_eval

    results = run_eval(config, progress=not quiet)
    print(results_table(results))
    if results["transfer"]:
        print(
            "\nTransfer to held-out wordings (relative gain: (fine-tuned - base) / max(base, chance, 0.05)):"
        )
        print(transfer_table(results))
    print(f"\nresults.json, results.md and charts in {config.out}")


def push(config: Any, quiet: bool) -> None:
    """Publish a fine-tuned adapter (or the model it merges into), or a trained video model, with its card
    (and the corpus, for an adapter) to the Hub."""
    from e2wm.hub.push import push as run_push

    results = config.results
    if results is None and (Path(config.adapter) / "eval" / "results.json").is_file():
        results = str(Path(config.adapter) / "eval" / "results.json")
    where = run_push(
        config.adapter,
        config.repo_id,
        merge=config.merge,
        private=config.private,
        dataset=config.dataset,
        dataset_repo_id=config.dataset_repo_id,
        dry_run=config.dry_run,
        results=results,
    )
    if config.dry_run:
        files = sorted(p for p in Path(where).iterdir() if p.is_file())
        print(f"dry run: nothing uploaded; the {len(files)} files for {config.repo_id} are in {where}:")
        for path in files:
            print(f"  {path.name:<32} {path.stat().st_size:>12,} bytes")
        if config.dataset:
            print(f"the corpus {config.dataset} would go up as dataset {config.dataset_repo_id}")
    else:
        if config.dataset:
            print(f"pushed {config.dataset} to the Hub as dataset {config.dataset_repo_id}")
        print(f"pushed {config.adapter} to the Hub as model {config.repo_id}: {where}")


TRAIN_HELP = r"""Fine-tune a causal LM on an e2wm corpus with LoRA (or full fine-tuning) plus EWC.

    e2wm train --config recipes/RECIPE.yaml [--field value ...]
    e2wm train --accelerate_config zero2 [--num_processes 4] --config recipes/RECIPE.yaml
    accelerate launch --config_file accelerate_configs/X.yaml -m e2wm.training.train \
        --config recipes/RECIPE.yaml

Every field of the recipe (e2wm.training.config: ScriptArguments, EWCConfig; TRL's SFTConfig,
ModelConfig) can be given as a flag; `python -m e2wm.training.train --help` lists them all.
--accelerate_config (cpu, ddp, fsdp, single_gpu, zero2, zero3, or a config file) launches the
processes as `accelerate launch` does; its other flags (--num_processes, ...) go to the launcher."""

TRAIN_VIDEO_HELP = r"""Train a stage of the video narrator (1: encoder, 2: projector, 3: LoRA) from a recipe.

    e2wm train-video --config recipes/video_stage1_encoder_cpu.yaml [--field value ...]
    accelerate launch --config_file accelerate_configs/cpu.yaml -m e2wm.training.train_video \
        --config recipes/video_stage1_encoder_cpu.yaml

`python -m e2wm.training.train_video --help` lists every field."""


# Each command: its function and the config dataclass its flags come from (module:Class), imported only when
# that command runs, so that `e2wm --help` and the light commands do not wait for torch.
COMMANDS: dict[str, tuple[Callable[[Any, bool], None], str]] = {
    "collect": (collect, "e2wm.rollouts.collect:CollectConfig"),
    "build": (build, "e2wm.corpus.build:BuildConfig"),
    "fisher": (fisher, "e2wm.training.config:FisherConfig"),
    "eval": (evaluate, "e2wm.eval.config:EvalConfig"),
    "inspect": (inspect, "e2wm.cli:InspectConfig"),
    "run": (run, "e2wm.cli:RunConfig"),
    "render": (render, "e2wm.multimodal.render:RenderRolloutsConfig"),
    "stream": (stream, "e2wm.multimodal.evaluate:StreamConfig"),
    "push": (push, "e2wm.hub.push:PushConfig"),
}
SHOWS_PROGRESS = ("collect", "build", "eval", "render")


def config_class(command: str) -> type:
    module, name = COMMANDS[command][1].split(":")
    return getattr(importlib.import_module(module), name)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``e2wm`` parser; the flags of ``command`` (if given) from its config dataclass."""
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
    for name, (func, _) in COMMANDS.items():
        p = add(name, help=func.__doc__, description=func.__doc__)
        if name == command:
            add_flags(p, config_class(name))
            if name in SHOWS_PROGRESS:
                p.add_argument("--quiet", action="store_true", help="no progress bar")
            _either_spelling(p)
    train = "fine-tune with LoRA + EWC from a recipe"
    add("train", help=train, description=TRAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    video = "train a stage of the video narrator from a recipe"
    add(
        "train-video",
        help=video,
        description=TRAIN_VIDEO_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _either_spelling(parser: argparse.ArgumentParser) -> None:
    """One flag style with train's (TRL's) parser: ``--shard-size`` and ``--shard_size`` both work."""
    for action in list(parser._actions):  # noqa: SLF001
        for option in list(action.option_strings):
            alias = "--" + option[2:].replace("-", "_")
            if option.startswith("--") and alias != option:
                action.option_strings.append(alias)
                parser._option_string_actions[alias] = action  # noqa: SLF001


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``e2wm CMD: error: ...``, exit 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> None:
    keep_freed_memory()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["train"], ["train-video"]) and argv[1:2] not in (["-h"], ["--help"]):
        # The training flags belong to TRL's parser (e2wm.training.train, .train_video), not to this one.
        if argv[0] == "train":
            from e2wm.training import launch

            if launch.requested(argv[1:]):
                launch.main(argv[1:])
                return
            from e2wm.training.train import main as train_main
        else:
            from e2wm.training.train_video import main as train_main

        train_main(argv[1:])
        return
    args = parse_args(argv)
    with reported(args.command, args.verbose), _output_lock(args.job):
        COMMANDS[args.command][0](args.job, getattr(args, "quiet", False))


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The subcommand's arguments (``--config`` expanded) and ``job``, its config built from them."""
    command = argv[0] if argv and argv[0] in COMMANDS else None
    with reported(argv[0] if argv else "", "--verbose" in argv):
        parser = build_parser(command)
        argv = _with_config(parser, argv)
    args = parser.parse_args(argv)
    with reported(args.command, args.verbose):
        args.job = config_from(config_class(args.command), args) if args.command in COMMANDS else None
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
        if isinstance(options[name], (argparse._StoreTrueAction, argparse._StoreFalseAction)):  # noqa: SLF001
            continue
        if isinstance(value, dict):
            flags += [f"{k}={v}" for k, v in value.items()]
        elif isinstance(value, list):
            flags += [str(v) for v in value]
        else:
            flags.append(str(value))
    return [argv[0], *flags, *rest]


def _output_lock(job: Any) -> contextlib.AbstractContextManager:
    """The lock on the command's output (``out``, or ``dry_run`` of push): one writer at a time;
    collect runs on separate shard ranges may share a directory."""
    out = getattr(job, "out", None) or getattr(job, "dry_run", None)
    if out is None:
        return contextlib.nullcontext()
    shards = getattr(job, "shard_range", None)
    return output_lock(out, "shards-{}-{}".format(*shards) if shards else "")


if __name__ == "__main__":
    main()
