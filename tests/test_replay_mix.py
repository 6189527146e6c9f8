"""Replay (``replay_fraction``): general prose from the "fisher" part mixed into the train split."""

import pytest
from test_train import argv

from e2wm.errors import E2WMError
from e2wm.training import general_text
from e2wm.training.config import ScriptArguments, parse
from e2wm.training.train import load_corpus, main, mix_replay, train


def mixed(corpus, fraction, source="pydoc", seed=0):
    script = ScriptArguments(dataset=str(corpus), replay_fraction=fraction, replay_source=source)
    return mix_replay(script, load_corpus(script, "train"), seed)


@pytest.mark.parametrize("source", general_text.SOURCES)
def test_mixed_split_size_and_replay_from_fisher_part_only(corpus, source):
    train = load_corpus(ScriptArguments(dataset=str(corpus)), "train")
    fisher = set(general_text.passages("fisher", source))
    retention = set(general_text.passages("retention", source))
    for fraction in (0.2, 0.5, 0.95):  # 0.95: 19 x 16 = 304 replay examples, cycling pydoc's passages
        ds = mixed(corpus, fraction, source)
        count = round(fraction / (1 - fraction) * len(train))
        assert len(ds) == len(train) + count
        replay = [row for row in ds if row["prompt"] == ""]
        assert len(replay) == count and all(row["weight"] == 1.0 for row in replay)
        texts = {row["completion"] for row in replay}
        assert texts <= fisher and texts.isdisjoint(retention)
        assert len(texts) == min(count, len(fisher))  # distinct until every passage is used
        embodied = sorted((r["prompt"], r["completion"]) for r in ds if r["prompt"] != "")
        assert embodied == sorted(zip(train["prompt"], train["completion"], strict=True))
    assert mixed(corpus, 0.2, source)["completion"] == mixed(corpus, 0.2, source)["completion"]
    assert mixed(corpus, 0.2, source)["completion"] != mixed(corpus, 0.2, source, seed=1)["completion"]


def test_zero_fraction_leaves_the_split_as_is(corpus):
    train = load_corpus(ScriptArguments(dataset=str(corpus)), "train")
    assert mixed(corpus, 0.0)["completion"] == train["completion"]


@pytest.mark.parametrize("fraction", ["1.0", "-0.1", "1.5", "nan"])
def test_bad_fraction_is_one_line_error(lm, corpus, tmp_path, fraction, capsys):
    with pytest.raises(E2WMError, match=r"replay_fraction must be in \[0, 1\)"):
        parse(argv(lm, corpus, tmp_path / "out", "--replay_fraction", fraction))
    with pytest.raises(SystemExit) as exit_info:
        main(argv(lm, corpus, tmp_path / "out", "--replay_fraction", fraction))
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1 and "replay_fraction" in error
    with pytest.raises(E2WMError, match="replay_source"):
        ScriptArguments(replay_fraction=0.2, replay_source="wikipedia")


def test_replay_examples_train_on_the_whole_passage(lm, corpus, tmp_path):
    """With an empty prompt and completion_only_loss, every token of the passage is in the loss."""
    trainer = train(
        *parse(argv(lm, corpus, tmp_path / "out", "--replay_fraction", "0.5", "--max_steps", "1"))
    )
    rows = trainer.train_dataset
    assert len(rows) == 32
    long_rows = [r for r in rows if len(r["input_ids"]) > 20]  # corpus examples are shorter
    assert len(long_rows) == 16
    for row in long_rows:
        assert row["labels"] == row["input_ids"]  # no token masked out
    assert all(-100 in r["labels"] for r in rows if len(r["input_ids"]) <= 20)  # corpus prompts are masked
