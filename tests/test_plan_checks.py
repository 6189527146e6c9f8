"""Plain-English plan checking: parsing, grounding, and executing plans in the simulator."""

from __future__ import annotations

from typing import Any

import pytest

from e2wm.agents.goals import goal_from_graphs
from e2wm.eval.plans import ParsedStep, check_plan, ground, parse_plan
from e2wm.simulator.protocol import Action
from e2wm.simulator.text import describe_action
from e2wm.simulator.virtualhome import resources
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator

GARBAGE = ["", "   ", "asdf qwe 123 !!! ...", "\x00\x01\u2603", "1. 2. 3.", "Grab", "Put cup.", "???" * 50]


def _episode(program: resources.Program, actions: list[Action] | None = None) -> dict[str, Any]:
    actions = program.actions() if actions is None else actions
    return {
        "graph_id": program.id,
        "people_rooms": [],
        "goal": [p.to_record() for p in goal_from_graphs(*program.graphs())],
        "steps": [
            {
                "verb": a.verb,
                "object_ids": [t.id for t in a.targets],
                "object_names": [t.name for t in a.targets],
                "success": True,
            }
            for a in actions
        ],
    }


def _plan(actions: list[Action]) -> str:
    return " ".join(describe_action(a) for a in actions)


def _parsed(steps: list[ParsedStep]) -> list[tuple[str | None, tuple[str, ...]]]:
    return [(s.verb, s.objects) for s in steps]


def test_parse_well_formed_plan() -> None:
    text = (
        "Walk to dining room. Open cupboard. Grab water glass. Pour water into water glass. "
        "Put water glass on cupboard. Put food salt in microwave. Switch on tv. Sit on chair. Stand up. "
        "Put back basket for clothes. Look at tv. Put on shirt."
    )
    assert _parsed(parse_plan(text)) == [
        ("WALK", ("dining_room",)),
        ("OPEN", ("cupboard",)),
        ("GRAB", ("water_glass",)),
        ("POUR", ("water", "water_glass")),
        ("PUTBACK", ("water_glass", "cupboard")),
        ("PUTIN", ("food_salt", "microwave")),
        ("SWITCHON", ("tv",)),
        ("SIT", ("chair",)),
        ("STANDUP", ()),
        ("PUTOBJBACK", ("basket_for_clothes",)),
        ("LOOKAT", ("tv",)),
        ("PUTON", ("shirt",)),
    ]
    assert all(s.ok for s in parse_plan(text))


def test_parse_sloppy_plan() -> None:
    text = "1. walk to the Dining Room\n2) open cupboard and then..."
    assert _parsed(parse_plan(text)) == [("WALK", ("dining_room",)), ("OPEN", ("cupboard",))]
    text = (
        "Sure! Here is the plan:\n- Walk  to KITCHEN\n* Step 2: Grab the water glass from the cupboard\n"
        "Step 3: put the Water Glass into a microwave.  turn on the TV\nLet me know if this helps!"
    )
    steps = parse_plan(text)
    assert _parsed(steps) == [
        ("WALK", ("kitchen",)),
        ("GRAB", ("water_glass",)),
        ("PUTIN", ("water_glass", "microwave")),
        ("SWITCHON", ("tv",)),
    ]
    assert steps[1].text == "Grab the water glass from the cupboard"


@pytest.mark.parametrize("text", GARBAGE)
def test_parse_garbage_never_raises(text: str) -> None:
    steps = parse_plan(text)
    assert all(not s.ok for s in steps)
    assert parse_plan(None) == []  # type: ignore[arg-type]


def test_ground_prefers_episode_ids_then_lowest_id() -> None:
    program = resources.program_by_id("file120_1")  # switches on two different lights
    graph = program.graphs()[0]
    steps = parse_plan(_plan(program.actions()))
    assert ground(steps, graph, _episode(program)) == program.actions()
    lights = sorted(n["id"] for n in graph["nodes"] if n["class_name"] == "light")
    grounded = ground(parse_plan("Walk to light. Dance. Walk to unicorn."), graph)
    assert grounded[0] == Action.parse(f"[WALK] <light> ({lights[0]})")
    assert grounded[1:] == [None, None]


def test_shipped_programs_plans_execute() -> None:
    programs = resources.programs()[::13]  # 40 of the 518
    sim = VirtualHomeSimulator()
    scores = []
    for program in programs:
        episode = _episode(program)
        check = check_plan(_plan(program.actions()), episode, sim)
        scores.append(check.executability)
        sim.reset(program.graphs()[0])
        replayed = all(sim.step(a).success for a in program.actions())
        if replayed and episode["goal"]:
            assert check.goal_success, program.id
        assert len(check.steps) == len(program.actions())
    mean = sum(scores) / len(scores)
    print(f"mean executability of {len(scores)} shipped programs' plans: {mean:.4f}")
    assert mean >= 0.97


def test_wrong_plan_fails() -> None:
    program = resources.program_by_id("file600_1")  # opens the freezer, then grabs the glass inside it
    actions = program.actions()
    episode = _episode(program)
    right = check_plan(_plan(actions), episode)
    assert right.executability == 1.0 and right.goal_success
    wrong = check_plan(_plan([a for a in actions if a.verb != "OPEN"]), episode)
    assert wrong.executability < 1.0
    assert not wrong.goal_success
    grab = next(o for o in wrong.steps if o.text.startswith("Grab"))
    assert not grab.success and grab.failure


@pytest.mark.parametrize("text", GARBAGE)
def test_garbage_plan_scores_zero(text: str) -> None:
    program = resources.program_by_id("file600_1")
    check = check_plan(text, _episode(program))
    assert check.executability == 0.0
    assert not check.goal_success


def test_empty_goal_is_not_success() -> None:
    program = resources.program_by_id("file600_1")
    episode = {**_episode(program), "goal": []}
    check = check_plan(_plan(program.actions()), episode)
    assert check.executability == 1.0
    assert not check.goal_success
