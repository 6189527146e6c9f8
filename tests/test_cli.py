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


def test_flag_defaults_are_the_config_defaults():
    from e2wm.corpus.build import BuildConfig
    from e2wm.eval.config import EvalConfig
    from e2wm.multimodal.render import RenderConfig
    from e2wm.rollouts.collect import CollectConfig

    collect = cli.parse_args(["collect"])
    want = CollectConfig()
    assert (collect.shard_size, collect.workers, collect.out, tuple(collect.splits)) == (
        want.shard_size, want.workers, want.out, want.splits,
    )  # fmt: skip
    assert (collect.length, collect.mcts_iterations) == (want.explore.length, want.mcts.iterations)
    build = cli.parse_args(["build", "--rollouts", "r", "--out", "o"])
    assert (tuple(build.tasks), build.shots, build.train_kshot_share) == (
        BuildConfig("r", "o").tasks, BuildConfig("r", "o").shots, BuildConfig("r", "o").train_kshot_share,
    )  # fmt: skip
    evaluate = cli.parse_args(["eval", "--out", "o"])
    assert (evaluate.model, evaluate.limit, tuple(evaluate.splits)) == (
        EvalConfig().model, EvalConfig().limit, EvalConfig().splits,
    )  # fmt: skip
    render = cli.parse_args(["render", "--rollouts", "r", "--out", "o"])
    shown = RenderConfig()
    assert (render.size, render.fps, render.pause_rate) == (shown.size, shown.fps, shown.pause_rate)


def test_flags_take_either_spelling_as_trl_flags_do():
    hyphen = cli.parse_args(["collect", "--shard-size", "4", "--mcts-iterations", "9"])
    underscore = cli.parse_args(["collect", "--shard_size", "4", "--mcts_iterations", "9"])
    assert vars(hyphen) == vars(underscore)
    assert (underscore.shard_size, underscore.mcts_iterations) == (4, 9)
