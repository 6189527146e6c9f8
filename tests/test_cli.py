"""The ``e2wm`` command as a user starts it: ``python -m e2wm``, ``--version``, every subcommand's help."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from e2wm import cli

ROOT = Path(__file__).resolve().parents[1]


def _e2wm(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "e2wm", *argv], capture_output=True, text=True, cwd=ROOT)


def test_python_m_e2wm_gives_the_installed_version():
    proc = _e2wm("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"e2wm {version('e2wm')}"


def test_no_subcommand_is_a_one_line_usage_error():
    proc = _e2wm()
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "error:" in proc.stderr, proc.stderr


@pytest.mark.parametrize("command", sorted(cli.build_parser()._subparsers._group_actions[0].choices))  # noqa: SLF001
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: e2wm {command}" in capsys.readouterr().out


def test_every_command_takes_its_flags_from_a_yaml_config_and_flags_win(tmp_path, capsys):
    config = tmp_path / "collect.yaml"
    out = tmp_path / "rollouts"
    config.write_text(f"agent: random\nepisodes: 3\nlength: 3\nshard_size: 1\nout: {out}\nquiet: true\n")
    cli.main(["collect", "--config", str(config), "--episodes", "2"])  # the flag beats the file's 3
    assert sorted(p.name for p in out.glob("*.parquet")) == [
        "random-00000-of-00002.parquet",
        "random-00001-of-00002.parquet",
    ]
    assert "random: 2 shard(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("agent: random\nshard_sise: 2\n", "unknown key 'shard_sise' (did you mean shard-size?)"),
        ("- agent\n- random\n", "not a YAML mapping"),
        ("agent: [unclosed\n", "not readable YAML"),
    ],
)
def test_a_bad_config_is_one_line_before_any_work(text, phrase, tmp_path, capfd):
    config = tmp_path / "job.yaml"
    config.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["collect", "--config", str(config), "--out", str(tmp_path / "out")])
    err = capfd.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and phrase in err, err
    assert not (tmp_path / "out").exists()


def _configs() -> list[tuple[list[str], object]]:
    """Each command's shortest command line, and the config it must give: the dataclass's own defaults."""
    from e2wm.corpus.build import BuildConfig
    from e2wm.eval.config import EvalConfig
    from e2wm.hub.push import PushConfig
    from e2wm.multimodal.evaluate import StreamConfig
    from e2wm.multimodal.render import RenderRolloutsConfig
    from e2wm.rollouts.collect import CollectConfig
    from e2wm.training.config import FisherConfig

    return [
        (["collect"], CollectConfig()),
        (["build", "--rollouts", "r", "--out", "o"], BuildConfig("r", "o")),
        (["fisher", "--out", "f.safetensors"], FisherConfig("f.safetensors")),
        (["eval"], EvalConfig()),
        (["inspect", "d"], cli.InspectConfig("d")),
        (["run", "p.txt"], cli.RunConfig("p.txt")),
        (["render", "--rollouts", "r", "--out", "o"], RenderRolloutsConfig("r", "o")),
        (["stream", "--model", "m"], StreamConfig("m")),
        (["push", "--adapter", "a", "--repo-id", "u/n"], PushConfig("a", "u/n")),
    ]


def test_every_command_has_a_config_and_its_flags_default_to_its_fields():
    configs = _configs()
    assert sorted(argv[0] for argv, _ in configs) == sorted(cli.COMMANDS)
    for argv, want in configs:
        assert cli.parse_args(argv).job == want, argv


def test_every_kind_of_field_is_a_flag():
    job = cli.parse_args(
        ["eval", "--no-base", "--kshot", "--normalization", "housework_qa=sum", "activity_inference=mean",
         "--tasks", "counting", "--limit", "0", "--length-edges", "3", "9", "--retention-passages", "2"]
    ).job  # fmt: skip
    assert (job.base, job.kshot, job.transfer_kshot, job.limit) == (False, True, True, None)
    assert job.normalization == {"housework_qa": "sum", "activity_inference": "mean"}
    assert (job.tasks, job.length_edges, job.retention_passages) == (("counting",), (3, 9), 2)
    job = cli.parse_args(
        ["collect", "--shard-range", "1:3", "--splits", "train", "--mcts-iterations", "9"]
    ).job
    assert (job.shard_range, job.splits, job.mcts.iterations, job.explore.length) == (
        (1, 3),
        ("train",),
        9,
        20,
    )


def test_flags_take_either_spelling_as_trl_flags_do():
    hyphen = cli.parse_args(["collect", "--shard-size", "4", "--mcts-iterations", "9"]).job
    underscore = cli.parse_args(["collect", "--shard_size", "4", "--mcts_iterations", "9"]).job
    assert hyphen == underscore
    assert (underscore.shard_size, underscore.mcts.iterations) == (4, 9)


@pytest.mark.parametrize(
    ("module", "argv", "extra"),
    [
        ("av", ["render", "--rollouts", "r", "--out", "OUT"], "video"),
        ("lm_eval", ["eval", "--backend", "lm-eval", "--out", "OUT"], "lm-eval"),
    ],
)
def test_a_missing_optional_dependency_names_its_extra_in_one_line(module, argv, extra, tmp_path):
    """Without an optional dependency (pyproject extras), the command that needs it fails in one line."""
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in argv]
    code = f"import sys; sys.modules[{module!r}] = None; from e2wm.cli import main; main({argv!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"pip install 'e2wm[{extra}]'" in proc.stderr
    assert not (tmp_path / "out").exists()
