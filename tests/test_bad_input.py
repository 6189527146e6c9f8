"""Malformed input to every subcommand: exit status 2, one stderr line, no traceback, nothing written.

One table, one row per malformed input. Each row runs the real command line (``e2wm.cli.main``, in
process) into a fresh output path and checks the whole contract, not only the message: a command that
raised, printed a second line, or left a file at its output fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
import pyarrow.parquet as pq
import pytest
import torch
import transformers
from peft import LoraConfig, get_peft_model
from support.tiny_lm import save_tiny_corpus, save_tiny_eval_corpus, save_tiny_lm

from e2wm import cli
from e2wm.corpus.read import open_corpus
from e2wm.errors import E2WMError, reported
from e2wm.rollouts.collect import CollectConfig, collect
from e2wm.rollouts.shards import shard_files
from e2wm.simulator.virtualhome import resources

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Inputs:
    """Well-formed inputs the rows break one at a time, and files broken once for all rows."""

    root: Path
    lm: Path
    adapter: Path
    corpus: Path
    eval_corpus: Path
    rollouts: Path
    program: Path
    graph: Path

    def file(self, name: str, data: str | bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
        return str(path)

    def copy(self, source: Path, name: str, change: Callable[[Path], None]) -> str:
        path = self.root / name
        shutil.copytree(source, path)
        change(path)
        return str(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("inputs")
    lm = save_tiny_lm(root / "lm")
    torch.manual_seed(0)
    peft = get_peft_model(
        transformers.AutoModelForCausalLM.from_pretrained(lm),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    peft.save_pretrained(root / "adapter")
    rollouts = root / "rollouts"
    collect(CollectConfig(agent="replay", out=str(rollouts), episodes=2), progress=False)
    drink = resources.program_by_id("file628_2")
    return Inputs(
        root=root / "made",
        lm=lm,
        adapter=root / "adapter",
        corpus=save_tiny_corpus(root / "corpus"),
        eval_corpus=save_tiny_eval_corpus(root / "eval_corpus"),
        rollouts=rollouts,
        program=_program_file(root / "drink.txt", drink),
        graph=Path(drink.graph_path),
    )


def _program_file(path: Path, program: resources.Program) -> Path:
    path.write_text(f"{program.activity}\n{program.description}\n\n" + "\n".join(program.lines) + "\n")
    return path


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _shards_without(rollouts: Path, column: str) -> Callable[[Path], None]:
    def change(copy: Path) -> None:
        for shard in shard_files(copy):
            table = pq.read_table(shard)
            pq.write_table(table.drop_columns([column]), shard)

    return change


def _other_model_adapter(folder: Path) -> None:
    """``folder`` holds an adapter of a wider model than the tiny LM (hidden 32, not 16)."""
    shutil.rmtree(folder)
    small = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=45
        )
    )
    get_peft_model(small, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(folder)


# Each row: subcommand and its arguments (OUT is the fresh output path; the others are made by the
# lambda from the inputs), and a phrase of the one error line.
Row = tuple[Callable[[Inputs], list[str]], str]
RECIPE = "recipes/smollm2_ewc_lora_cpu.yaml"


def _train(i: Inputs, *extra: str) -> list[str]:
    return [
        "train", "--config", RECIPE, "--model_name_or_path", str(i.lm), "--dataset", str(i.corpus),
        "--output_dir", "OUT", "--bf16", "false", "--fisher_path", str(i.root / "none.safetensors"), *extra,
    ]  # fmt: skip


def _eval(i: Inputs, *extra: str) -> list[str]:
    return ["eval", "--model", str(i.lm), "--corpus", str(i.eval_corpus), "--out", "OUT", "--quiet", *extra]


ROWS: dict[str, Row] = {
    # collect: options, scene graphs
    "collect: no episodes": (lambda i: ["collect", "--episodes", "0", "--out", "OUT"], "at least 1"),
    "collect: unknown agent": (lambda i: ["collect", "--agent", "robot", "--out", "OUT"], "invalid choice"),
    "collect: shard range backwards": (
        lambda i: ["collect", "--shard-range", "5:2", "--out", "OUT"],
        "shard-range",
    ),
    "collect: shard range not numbers": (
        lambda i: ["collect", "--shard-range", "a:b", "--out", "OUT"],
        "FIRST:LAST",
    ),
    "collect: scene graph not JSON": (
        lambda i: [
            "collect",
            "--agent",
            "random",
            "--scene-graph",
            i.file("g1.json", "{nodes"),
            "--out",
            "OUT",
        ],
        "not valid JSON",
    ),
    "collect: scene graph without nodes": (
        lambda i: ["collect", "--agent", "random", "--scene-graph", i.file("g2.json", "{}"), "--out", "OUT"],
        "nodes",
    ),
    "collect: scene graph of the wrong agent": (
        lambda i: ["collect", "--agent", "mcts", "--scene-graph", str(i.graph), "--out", "OUT"],
        "applies to --agent random",
    ),
    # run: programs and scene graphs
    "run: missing program": (lambda i: ["run", str(i.root / "nope.txt")], "no such program file"),
    "run: unknown verb": (
        lambda i: [
            "run",
            i.file("p1.txt", "Drink\nI drink\n\n[FLY] <cupboard> (1.229)\n"),
            "--scene-graph",
            str(i.graph),
        ],
        "unknown action verb",
    ),  # fmt: skip
    "run: malformed action line": (
        lambda i: [
            "run",
            i.file("p2.txt", "Drink\nI drink\n\n[WALK] <room> (1.2\n"),
            "--scene-graph",
            str(i.graph),
        ],
        "malformed action line",
    ),  # fmt: skip
    "run: program without description": (
        lambda i: ["run", i.file("p3.txt", "Drink\n"), "--scene-graph", str(i.graph)],
        "description line",
    ),
    "run: scene graph not JSON": (
        lambda i: ["run", str(i.program), "--scene-graph", i.file("g3.json", "[1, 2")],
        "not valid JSON",
    ),
    # build and inspect: rollout shards
    "build: missing rollouts": (lambda i: ["build", "--rollouts", str(i.root / "no"), "--out", "OUT"], "no "),
    "build: shard not Parquet": (
        lambda i: [
            "build",
            "--rollouts",
            str(Path(i.file("junk/random-00000-of-00001.parquet", b"junk")).parent),
            "--out",
            "OUT",
        ],
        "unreadable shard",
    ),  # fmt: skip
    "build: shards without steps": (
        lambda i: [
            "build",
            "--rollouts",
            i.copy(i.rollouts, "r1", _shards_without(i.rollouts, "steps")),
            "--out",
            "OUT",
        ],
        "steps",
    ),  # fmt: skip
    "build: truncated shard": (
        lambda i: [
            "build",
            "--rollouts",
            i.copy(i.rollouts, "r2", lambda p: _truncate(shard_files(p)[0])),
            "--out",
            "OUT",
        ],
        "unreadable shard",
    ),  # fmt: skip
    "build: unknown task": (
        lambda i: ["build", "--rollouts", str(i.rollouts), "--tasks", "juggling", "--out", "OUT"],
        "unknown task",
    ),
    "build: kshot share above 1": (
        lambda i: ["build", "--rollouts", str(i.rollouts), "--train-kshot-share", "1.5", "--out", "OUT"],
        "--train-kshot-share",
    ),
    "build: weight not a number": (
        lambda i: ["build", "--rollouts", str(i.rollouts), "--weights", "counting=heavy", "--out", "OUT"],
        "TASK=WEIGHT",
    ),
    "build: bad Hub dataset id": (
        lambda i: ["build", "--rollouts", str(i.rollouts), "--push-to-hub", "no slash!", "--out", "OUT"],
        "--push-to-hub must be a Hub repo id",
    ),
    "inspect: missing directory": (lambda i: ["inspect", str(i.root / "nowhere")], "no .parquet shards"),
    "inspect: shard not Parquet": (
        lambda i: ["inspect", str(Path(i.file("junk2/random-00000-of-00001.parquet", b"x")).parent)],
        "unreadable shard",
    ),
    # train: recipes, flags, corpora, Fisher files, models
    "train: misspelt recipe key": (
        lambda i: ["train", "--config", i.file("r1.yaml", "learning_rat: 1.0e-4\n"), "--output_dir", "OUT"],
        "did you mean learning_rate",
    ),
    "train: recipe not a mapping": (
        lambda i: ["train", "--config", i.file("r2.yaml", "- a\n- b\n"), "--output_dir", "OUT"],
        "not a YAML mapping",
    ),
    "train: recipe not YAML": (
        lambda i: ["train", "--config", i.file("r3.yaml", "a: [1,\n"), "--output_dir", "OUT"],
        "not readable YAML",
    ),
    "train: recipe value of the wrong type": (
        lambda i: ["train", "--config", i.file("r4.yaml", "max_steps: many\n"), "--output_dir", "OUT"],
        "max_steps must be an integer",
    ),
    "train: missing recipe": (
        lambda i: ["train", "--config", str(i.root / "none.yaml"), "--output_dir", "OUT"],
        "no such file",
    ),
    "train: misspelt flag": (lambda i: _train(i, "--learning_rat", "1"), "did you mean --learning_rate"),
    "train: flag value of the wrong type": (lambda i: _train(i, "--learning_rate", "fast"), "a number"),
    "train: negative ewc_lambda": (lambda i: _train(i, "--ewc_lambda", "-1"), "ewc_lambda must be"),
    "train: zero batch size": (
        lambda i: _train(i, "--per_device_train_batch_size", "0"),
        "per_device_train_batch_size must be > 0",
    ),
    "train: zero max_steps": (lambda i: _train(i, "--max_steps", "0"), "max_steps must be"),
    "train: lora_dropout of 1.5": (lambda i: _train(i, "--lora_dropout", "1.5"), "lora_dropout"),
    "train: replay fraction of 1": (lambda i: _train(i, "--replay_fraction", "1"), "replay_fraction"),
    "train: unknown task": (lambda i: _train(i, "--tasks", "juggling"), "unknown task"),
    "train: unknown eval suite": (lambda i: _train(i, "--eval_suite", "embodyed"), "did you mean embodied"),
    "train: missing corpus": (lambda i: _train(i, "--dataset", str(i.root / "nope")), "no such directory"),
    "train: folder without a corpus": (
        lambda i: _train(i, "--dataset", str(Path(i.file("empty/notes.txt", "")).parent)),
        "nor JSONL or Parquet split files",
    ),
    "train: JSONL corpus with a broken line": (
        lambda i: _train(i, "--dataset", _jsonl_corpus(i, "j1", broken=True)),
        "cannot load corpus",
    ),
    "train: Parquet split file not Parquet": (
        lambda i: _train(
            i, "--dataset", str(Path(i.file("pq/train-00000-of-00001.parquet", b"PAR1")).parent)
        ),
        "cannot load corpus",
    ),
    "eval: JSONL corpus without test splits": (
        lambda i: _eval(i, "--corpus", _jsonl_corpus(i, "j2", broken=False)),
        "has no split",
    ),
    "train: corpus of the wrong columns": (
        lambda i: _train(i, "--dataset", i.copy(i.corpus, "c1", lambda p: _drop_column(p, "completion"))),
        "lacks column",
    ),
    "train: truncated Fisher file": (
        lambda i: _train(i, "--fisher_path", i.file("f1.safetensors", _truncated_safetensors())),
        "truncated",
    ),
    "train: Fisher file not safetensors": (
        lambda i: _train(i, "--fisher_path", i.file("f2.safetensors", b"\x00" * 64)),
        "not a safetensors file",
    ),
    "train: model offline": (
        lambda i: _train(i, "--model_name_or_path", "nobody-e2wm/no-model"),
        "no-model",
    ),
    "train: model directory with pickle weights only": (
        lambda i: _train(i, "--model_name_or_path", i.copy(i.lm, "lm1", _pickle_only)),
        "no .safetensors weights",
    ),
    "train: missing checkpoint to resume": (
        lambda i: _train(i, "--resume_from_checkpoint", str(i.root / "ckpt")),
        "no such checkpoint",
    ),
    # fisher
    "fisher: model offline": (
        lambda i: ["fisher", "--model", "nobody-e2wm/no-model", "--out", "OUT"],
        "no-model",
    ),
    "fisher: no samples": (
        lambda i: ["fisher", "--model", str(i.lm), "--samples", "0", "--out", "OUT"],
        "--samples",
    ),
    "fisher: missing data": (
        lambda i: ["fisher", "--model", str(i.lm), "--data", str(i.root / "none"), "--out", "OUT"],
        "no such directory",
    ),
    "fisher: truncated model weights": (
        lambda i: [
            "fisher",
            "--model",
            i.copy(i.lm, "lm2", lambda p: _truncate(p / "model.safetensors")),
            "--out",
            "OUT",
        ],
        "truncated",
    ),  # fmt: skip
    # eval: corpora, adapters, options
    "eval: unknown device": (lambda i: _eval(i, "--device", "tpu"), "unknown device 'tpu'"),
    "eval: unknown dtype": (lambda i: _eval(i, "--dtype", "float8"), "unknown dtype 'float8'"),
    "eval: batch size 0": (lambda i: _eval(i, "--batch-size", "0"), "batch size must be 1 or more"),
    "eval: missing corpus": (lambda i: _eval(i, "--corpus", str(i.root / "no_corpus")), "no such directory"),
    "eval: corpus without test splits": (lambda i: _eval(i, "--corpus", str(i.corpus)), "has no split"),
    "eval: corrupt corpus": (
        lambda i: _eval(i, "--corpus", i.copy(i.eval_corpus, "c2", _corrupt_dataset_dict)),
        "cannot load corpus",
    ),
    "eval: truncated adapter weights": (
        lambda i: _eval(
            i, "--adapter", i.copy(i.adapter, "a1", lambda p: _truncate(p / "adapter_model.safetensors"))
        ),
        "truncated",
    ),
    "eval: adapter config not JSON": (
        lambda i: _eval(
            i, "--adapter", i.copy(i.adapter, "a2", lambda p: (p / "adapter_config.json").write_text("{"))
        ),
        "not JSON",
    ),
    "eval: adapter of another model": (
        lambda i: _eval(i, "--adapter", i.copy(i.adapter, "a3", _other_model_adapter)),
        "does not fit model",
    ),
    "eval: pickle-only adapter": (
        lambda i: _eval(i, "--adapter", i.copy(i.adapter, "a4", _pickle_only_adapter)),
        "no adapter_model.safetensors",
    ),
    "eval: unknown task": (lambda i: _eval(i, "--tasks", "juggling"), "unknown task"),
    "eval: negative limit": (lambda i: _eval(i, "--limit", "-3"), "limit"),
    "eval: unknown split": (lambda i: _eval(i, "--splits", "test_everything"), "splits must be among"),
    "eval: model offline": (lambda i: _eval(i, "--model", "nobody-e2wm/no-model"), "no-model"),
    # render, stream: rollouts, videos
    "render: missing rollouts": (
        lambda i: ["render", "--rollouts", str(i.root / "no"), "--out", "OUT"],
        "no ",
    ),
    "render: no workers": (
        lambda i: ["render", "--rollouts", str(i.rollouts), "--workers", "0", "--out", "OUT"],
        "--workers",
    ),
    "render: unknown split": (
        lambda i: ["render", "--rollouts", str(i.rollouts), "--split", "holdout", "--out", "OUT"],
        "invalid choice",
    ),
    "stream: no model": (
        lambda i: ["stream", "--model", str(i.root / "no_model"), "--video", str(i.root / "v.mp4")],
        "no trained video model",
    ),
    "stream: a text model as narrator": (
        lambda i: ["stream", "--model", str(i.lm), "--video", str(i.root / "v.mp4")],
        "not a video narrator",
    ),
    "stream: no episodes": (
        lambda i: ["stream", "--model", str(i.lm), "--rollouts", str(i.rollouts), "--episodes", "0"],
        "--episodes",
    ),
    "stream: two sources": (
        lambda i: ["stream", "--model", str(i.lm), "--rollouts", str(i.rollouts), "--clips", str(i.root)],
        "exactly one of --video, --rollouts and --clips",
    ),
    "stream: no source": (lambda i: ["stream", "--model", str(i.lm)], "exactly one of"),
    # push: adapters, results, repo ids
    "push: missing adapter": (
        lambda i: ["push", "--adapter", str(i.root / "no"), "--repo-id", "me/x", "--dry-run", "OUT"],
        "no such adapter",
    ),
    "push: bad repo id": (
        lambda i: ["push", "--adapter", str(i.adapter), "--repo-id", "no slash", "--dry-run", "OUT"],
        "USER/NAME",
    ),
    "push: truncated adapter weights": (
        lambda i: [
            "push",
            "--adapter",
            i.copy(i.adapter, "a5", lambda p: _truncate(p / "adapter_model.safetensors")),
            "--repo-id",
            "me/x",
            "--dry-run",
            "OUT",
        ],
        "truncated",
    ),  # fmt: skip
    "push: results not JSON": (
        lambda i: [
            "push",
            "--adapter",
            str(i.adapter),
            "--results",
            i.file("results.json", "{"),
            "--repo-id",
            "me/x",
            "--dry-run",
            "OUT",
        ],
        "results",
    ),  # fmt: skip
    "push: results of another adapter": (
        lambda i: [
            "push",
            "--adapter",
            str(i.adapter),
            "--results",
            i.file("results2.json", json.dumps({"format": "e2wm-eval/1", "adapter_sha256": "0" * 64})),
            "--repo-id",
            "me/x",
            "--dry-run",
            "OUT",
        ],
        "another",
    ),  # fmt: skip
    # train-video: clips of video and caption JSON
    "train-video: caption JSON not JSON": (lambda i: _video(i, "v1", captions="{"), "not valid JSON"),
    "train-video: caption without text": (
        lambda i: _video(i, "v2", captions='{"captions": [{"time": 0.5, "text": ""}]}'),
        "non-empty 'text'",
    ),
    "train-video: captions out of order": (
        lambda i: _video(
            i, "v3", captions='{"captions": [{"time": 2, "text": "b"}, {"time": 1, "text": "a"}]}'
        ),
        "not sorted by time",
    ),
    "train-video: video without its captions": (lambda i: _video(i, "v4", captions=None), "no caption file"),
    "train-video: video not a video": (lambda i: _video(i, "v5"), "cannot decode video"),
    "train-video: question without an answer": (
        lambda i: _video(
            i, "v6", captions='{"captions": [], "questions": [{"time": 0.5, "text": "is the tv on?"}]}'
        ),
        "needs a non-empty 'text' and 'answer'",
    ),
    "train-video: slot weights not numbers": (
        lambda i: [*_video(i, "v7"), "--slot_loss_weights", "1", "x"],
        "slot_loss_weights must be a list of numbers",
    ),
    "train-video: recipe list of the wrong type": (
        lambda i: ["train-video", "--config", i.file("rv.yaml", "slot_loss_weights: [1, many]\n")],
        "slot_loss_weights must be a list of numbers, got [1, 'many']",
    ),
}


def _video(
    i: Inputs, name: str, captions: str | None = '{"captions": [{"time": 0.5, "text": "a"}]}'
) -> list[str]:
    """``train-video`` stage 1 on a directory of one clip: a file that is not a video, and ``captions``."""
    clip = Path(i.file(f"{name}/clip.mp4", b"\x00\x00\x00\x18ftypmp42 not really a video"))
    if captions is not None:
        clip.with_suffix(".json").write_text(captions)
    return [
        "train-video",
        "--stage",
        "1",
        "--clips",
        str(clip.parent),
        "--output_dir",
        "OUT",
        "--use_cpu",
        "true",
    ]


def _jsonl_corpus(i: Inputs, name: str, broken: bool) -> str:
    """A folder of JSONL split files (as ``e2wm build --jsonl`` exports) of the tiny train corpus."""
    corpus = open_corpus(str(i.corpus))
    folder = i.root / name
    folder.mkdir(parents=True)
    for split in corpus:
        corpus[split].to_json(str(folder / f"{split}.jsonl"), lines=True)
    if broken:
        with (folder / "train.jsonl").open("a") as f:
            f.write('{"prompt": "walk to the", "completion": \n')
    return str(folder)


def _drop_column(corpus: Path, column: str) -> None:
    ds = open_corpus(str(corpus)).remove_columns(column)
    shutil.rmtree(corpus)
    ds.save_to_disk(str(corpus))


def _corrupt_dataset_dict(corpus: Path) -> None:
    (corpus / "dataset_dict.json").write_text("{not json")


def _pickle_only(model: Path) -> None:
    state = transformers.AutoModelForCausalLM.from_pretrained(model).state_dict()
    torch.save(state, model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()


def _pickle_only_adapter(adapter: Path) -> None:
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")


def _truncated_safetensors() -> bytes:
    from safetensors.torch import save

    data = save({"w": torch.ones(64, 64)}, metadata={"model": "x"})
    return data[: len(data) - 100]


def test_the_table_covers_every_subcommand() -> None:
    commands = {name.split(":")[0] for name in ROWS}
    subcommands = set(cli.build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001
    assert commands == subcommands
    assert len(ROWS) >= 40


@pytest.mark.parametrize("name", list(ROWS))
def test_malformed_input_is_one_line_and_exit_2_and_writes_nothing(
    name, inputs, tmp_path, capfd, monkeypatch
) -> None:
    make_argv, phrase = ROWS[name]
    out = tmp_path / "out"
    argv = [str(out) if a == "OUT" else a for a in make_argv(inputs)]
    # the Hub ids of the table must fail as offline, not after a network timeout
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capfd.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith(f"e2wm {argv[0]}: error: "), err
    assert phrase in err, err
    assert not out.exists() and not list(tmp_path.glob(".*"))  # neither output nor temporary nor lock


def _noisy_job(fail: bool) -> None:
    """What a command does before its checks fail: a Python warning and a line from C (file descriptor 2)."""
    warnings.warn("a library's deprecation notice", UserWarning, stacklevel=1)
    os.write(2, b"a C extension's notice\n")
    if fail:
        raise E2WMError("the input is bad")


@pytest.mark.parametrize("verbose", [False, True])
def test_noise_before_an_error_is_held_back_unless_verbose(capfd, verbose) -> None:
    with pytest.raises(SystemExit) as exit_info, reported("job", verbose):
        _noisy_job(fail=True)
    err = capfd.readouterr().err
    assert exit_info.value.code == 2 and err.endswith("e2wm job: error: the input is bad\n")
    assert ("notice" in err) == verbose and (err.count("\n") == 1) != verbose


def test_noise_of_a_job_that_succeeds_is_shown() -> None:
    script = (
        "import os, warnings\nfrom e2wm.errors import reported\nwith reported('job'):\n"
        "    warnings.warn('a deprecation notice', FutureWarning)\n    os.write(2, b'a notice from C\\n')"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "a deprecation notice" in done.stderr and "a notice from C" in done.stderr


def test_a_failing_train_prints_one_line_from_a_fresh_process(tmp_path) -> None:
    """The whole command line, imports included: TRL, PEFT and transformers say nothing before the error."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("learning_rat: 1.0e-4\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "e2wm.cli",
            "train",
            "--config",
            str(recipe),
            "--output_dir",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert (
        done.stderr
        == f"e2wm train: error: recipe {recipe}: unknown key 'learning_rat' (did you mean learning_rate?)\n"
    )
