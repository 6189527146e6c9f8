"""Questions about what a render has shown so far: asked after each step, answered by the simulator."""

from __future__ import annotations

import json
import re

import pytest

from e2wm.errors import E2WMError
from e2wm.multimodal.data import clip_windows
from e2wm.multimodal.questions import answer_matches, draw_questions
from e2wm.multimodal.render import RenderConfig, render_episode, write_clip
from e2wm.multimodal.video_io import VideoCaptionDirectory, load_annotations
from e2wm.rollouts.replay import initial_graph, replay_steps, start, touched_objects
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator

STILL = RenderConfig(size=32, pause_rate=0.0)  # step k ends at frame lead_in + 8 (k + 1) - 1


def _name(sim: VirtualHomeSimulator, node: int) -> str:
    return sim.node(node).class_name.replace("_", " ")


@pytest.mark.parametrize("episode", ["drink", "pair"])
def test_each_step_asks_what_the_simulator_holds_shows_and_counts(episode: str, request) -> None:
    episode = request.getfixturevalue(episode)
    clip = render_episode(episode, STILL)
    # The simulator's own state after each step, replayed here independently of the renderer.
    sim = VirtualHomeSimulator()
    people = len(start(episode, sim, initial_graph(episode)))
    objects = {_name(sim, n): n for n in touched_objects(episode, sim, skip=("Rooms", "Characters"))}
    after, puts = [], {}
    for step in replay_steps(episode, sim):
        if step["success"] and step["verb"].lower() in ("putin", "putback"):
            place = step["object_names"][1].replace("_", " ")
            puts[place] = puts.get(place, 0) + 1
        holding = [sorted(f"the {_name(sim, n)}" for n in sim.holds(p)) for p in range(people)]
        states = {name: sim.states_of(node) for name, node in objects.items()}
        after.append((holding, states, dict(puts)))
    steps = len(episode["steps"])
    assert steps > 3
    times = [(STILL.lead_in + 8 * (k + 1) - 1) / STILL.fps for k in range(steps)]
    assert sorted({q.time for q in clip.questions}) == pytest.approx(times)
    kinds = set()
    for question in clip.questions:
        holding, states, counted = after[min(range(steps), key=lambda k: abs(times[k] - question.time))]
        kinds.add(question.kind)
        if question.kind == "holding":
            person = int(re.fullmatch(r"what is person (\d+) holding\?", question.text).group(1)) - 1
            assert 0 <= person < people
            assert question.answer == (" and ".join(holding[person]) or "nothing")
        elif question.kind == "state":
            name, word = re.fullmatch(r"is the (.+) (open|on)\?", question.text).groups()
            assert question.answer == ("yes" if word.upper() in states[name] else "no")
            assert {"OPEN", "CLOSED"} & states[name] if word == "open" else {"ON", "OFF"} & states[name]
        else:
            place = re.fullmatch(r"how many things were put (?:in|on) the (.+)\?", question.text).group(1)
            assert question.answer == str(counted.get(place, 0))
            assert place in puts  # only places something is put in (or on) at some step
    assert "holding" in kinds and len(clip.questions) <= 3 * steps
    if episode["episode_id"] == "replay-file628_2":  # Drink opens the cupboard and puts the glass back
        assert kinds == {"holding", "state", "count"}
        answers = [q.answer for q in clip.questions if q.kind != "count"]
        assert {"nothing", "the water glass", "yes", "no"} <= set(answers)


def test_questions_survive_the_clip_file_and_windows(drink: dict, tmp_path) -> None:
    clip = render_episode(drink, STILL)
    write_clip(clip, tmp_path, "a")
    [loaded] = VideoCaptionDirectory(tmp_path, size=32)
    assert loaded.questions == clip.questions
    first, *rest = clip_windows(loaded, 64, 32)
    assert rest and all(not w.questions for w in rest)  # answers count from the clip's start
    kept = [q for q in clip.questions if q.time * clip.fps < 64]
    assert [(q.text, q.answer) for q in first.questions] == [(q.text, q.answer) for q in kept]
    assert all(
        int(a.time * 16) == int(b.time * 16 + 1e-6) for a, b in zip(first.questions, kept, strict=True)
    )
    record = json.loads((tmp_path / "a.json").read_text())
    for bad, match in [
        ({"questions": {}}, "'questions' must be a list"),
        ({"questions": [{"time": 1.0, "text": "what?"}]}, "question 0 needs a non-empty 'text' and 'answer'"),
        ({"questions": [{"time": -1, "text": "what?", "answer": "x"}]}, "question 0 needs a non-negative"),
    ]:
        (tmp_path / "a.json").write_text(json.dumps({**record, **bad}))
        with pytest.raises(E2WMError, match=match) as info:
            load_annotations(tmp_path / "a.json")
        assert "\n" not in str(info.value)


def test_answers_match_whatever_the_order_case_and_articles() -> None:
    assert answer_matches("The mug and the plate.", "the plate and the mug")
    assert answer_matches("mug, plate", "the plate and the mug")
    assert answer_matches("2", "2") and answer_matches("Yes", "yes")
    assert not answer_matches("the mug", "the plate and the mug")
    assert (
        not answer_matches("no", "yes") and not answer_matches("1", "2") and not answer_matches("", "nothing")
    )


def test_questions_are_drawn_by_seed_and_name_in_their_order(drink: dict) -> None:
    questions = render_episode(drink, STILL).questions
    drawn = draw_questions(questions, 5, 0, "a")
    assert len(drawn) == 5 and drawn == draw_questions(questions, 5, 0, "a")
    assert [questions.index(q) for q in drawn] == sorted(questions.index(q) for q in drawn)
    assert drawn != draw_questions(questions, 5, 0, "b") or drawn != draw_questions(questions, 5, 1, "a")
    assert draw_questions(questions, len(questions) + 1, 0, "a") == questions
