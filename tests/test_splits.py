"""The train / held-out rule: by base program id, with whole activities held out."""

from collections import defaultdict

from e2wm.simulator.virtualhome.resources import programs
from e2wm.splits import SPLITS, is_unseen_activity, split_of


def test_every_program_has_a_split_and_every_split_is_used():
    splits = [split_of(p) for p in programs()]
    assert set(splits) == set(SPLITS)
    assert splits.count("train") > len(splits) / 2


def test_variants_of_a_base_program_fall_on_one_side():
    sides = defaultdict(set)
    for program in programs():
        sides[program.base_id].add(split_of(program) in ("train", "validation"))
    assert all(len(s) == 1 for s in sides.values())
    assert any(len([p for p in programs() if p.base_id == base]) > 1 for base in sides)


def test_unseen_activities_never_reach_train_or_validation():
    unseen = {p.activity for p in programs() if is_unseen_activity(p.activity)}
    assert unseen, "some activities must be held out whole"
    for program in programs():
        if program.activity in unseen:
            assert split_of(program) == "test_unseen"
        else:
            assert split_of(program) != "test_unseen"
    trained = {p.activity for p in programs() if split_of(p) == "train"}
    assert not trained & unseen
