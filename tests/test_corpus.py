"""The embodied QA corpus: answers recomputed from the rollouts, determinism, leakage, formats, card."""

import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from e2wm.corpus.build import CORPUS_SPLITS, TRANSFER_SPLITS, BuildConfig, build
from e2wm.corpus.example import balanced_choice, join_names
from e2wm.corpus.read import open_corpus
from e2wm.corpus.tasks import TASKS, TRACKING_TASKS
from e2wm.corpus.tasks.counting import count_answer
from e2wm.corpus.wording import LAYOUTS, QUESTIONS
from e2wm.errors import E2WMError
from e2wm.rollouts.collect import CollectConfig, collect
from e2wm.rollouts.schema import SCHEMA
from e2wm.rollouts.shards import shard_files
from e2wm.simulator.protocol import Action
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator, humanize
from e2wm.simulator.virtualhome.resources import program_by_id

ROOMS = {"bathroom", "bedroom", "dining_room", "home_office", "kitchen", "living_room"}


@pytest.fixture(scope="session")
def rollouts(tmp_path_factory):
    out = tmp_path_factory.mktemp("rollouts")
    collect(CollectConfig(agent="replay", out=str(out), episodes=80, shard_size=40), progress=False)
    mcts = CollectConfig(agent="mcts", out=str(out), episodes=3, shard_size=3)
    mcts.mcts.iterations = 40
    collect(mcts, progress=False)
    random_agent = CollectConfig(agent="random", out=str(out), episodes=40, shard_size=20)
    random_agent.explore.length = 30
    collect(random_agent, progress=False)
    return out


@pytest.fixture(scope="session")
def corpus_dir(rollouts, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "corpus"
    build(
        BuildConfig(rollouts=str(rollouts), out=str(out), jsonl=True, weights={"counting": 0.5}),
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def corpus(corpus_dir):
    return open_corpus(str(corpus_dir))


@pytest.fixture(scope="session")
def episodes(rollouts):
    rows = [r for f in shard_files(rollouts) for r in pq.read_table(f).to_pylist()]
    return {r["episode_id"]: r for r in rows}


def _examples(corpus, task):
    found = [e for split in corpus.values() for e in split if e["task"] == task]
    assert found, f"no {task} examples"
    return found


def _answer(example):
    assert example["completion"].startswith(" ")
    answer = example["completion"][1:]
    if example["choices"]:
        assert example["choices"][example["label"]] == answer and len(set(example["choices"])) == len(
            example["choices"]
        )
    return answer


def _wording(example):
    return json.loads(example["meta"])["wording"]


def _people(episode):
    """Character ids of an episode's people, from its start (no step executed)."""
    sim = VirtualHomeSimulator(program_by_id(episode["graph_id"]).graphs()[0])
    for room in episode["people_rooms"][1:]:
        sim.state.add_character(room)
    return sim.state.char_ids


def _edges_after(episode, steps):
    """(added, removed) edge events of the first ``steps`` recorded steps, in order."""
    events = []
    for step in episode["steps"][:steps]:
        events += [(e, +1) for e in step["edges_added"]] + [(e, -1) for e in step["edges_removed"]]
    return events


ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth")


def _labels(episode):
    """How narration names touched objects: the class, with an ordinal (by first touch) if it repeats."""
    rooms = {
        n["id"] for n in program_by_id(episode["graph_id"]).graphs()[0]["nodes"] if n["category"] == "Rooms"
    }
    touched = {}
    for step in episode["steps"]:
        for i, n in zip(step["object_ids"], step["object_names"], strict=True):
            if i not in rooms:
                touched.setdefault(i, n.replace("_", " "))
    classes = Counter(touched.values())
    seen = Counter()
    labels = {}
    for i, name in touched.items():
        seen[name] += 1
        labels[i] = f"{ORDINALS[seen[name] - 1]} {name}" if classes[name] > 1 else name
    return labels


def test_every_task_has_examples_in_the_expected_format(corpus):
    tasks = set().union(*(set(split["task"]) for split in corpus.values()))
    assert tasks == set(TASKS)
    assert set(corpus) == set(CORPUS_SPLITS)
    for split, ds in corpus.items():
        groups = set(ds["split_group"])
        assert groups == ({"unseen"} if split.startswith("test_unseen") else {"seen"})
    assert {w for e in corpus["train"] for w in [e["weight"]] if e["task"] == "counting"} == {0.5}
    assert {e["weight"] for e in corpus["train"] if e["task"] != "counting"} == {1.0}


def test_plan_and_activity_answers_come_from_the_episode(corpus, episodes):
    for task in ("plan_generation", "activity_recognition", "activity_recognition_mc", "activity_inference"):
        for e in _examples(corpus, task):
            episode = episodes[e["episode_id"]]
            answer = _answer(e)
            if task == "plan_generation":
                steps = [s["action_text"] for s in episode["steps"]]
                if _wording(e)["answer_form"] == "numbered":
                    steps = [f"{i}. {step}" for i, step in enumerate(steps, 1)]
                assert answer == " ".join(steps)
                assert f"Activity: {episode['activity']}." in e["prompt"]
            else:
                assert answer == episode["activity"]


def test_housework_answers_follow_the_items_each_activity_uses(corpus, episodes):
    used_by_activity = {}
    for ep in episodes.values():
        if ep["activity"]:
            used_by_activity.setdefault(ep["activity"], set()).update(
                n.replace("_", " ") for s in ep["steps"] for n in s["object_names"]
            )
    for e in _examples(corpus, "housework_qa") + _examples(corpus, "housework_qa_negation"):
        episode = episodes[e["episode_id"]]
        used = {n.replace("_", " ") for s in episode["steps"] for n in s["object_names"]}
        answer = _answer(e)
        others = [c for c in e["choices"] if c != answer]
        if e["task"] == "housework_qa":
            assert answer in used and not set(others) & used_by_activity[episode["activity"]]
        else:
            assert answer not in used_by_activity[episode["activity"]] and set(others) <= used


def test_counting_answers_recomputed_from_recorded_edges(corpus, episodes):
    for e in _examples(corpus, "counting"):
        episode, meta = episodes[e["episode_id"]], json.loads(e["meta"])
        told = episode["steps"][: meta["step"]]
        moved = {s["object_ids"][0] for s in told if s["verb"] == "GRAB" and s["success"]}
        support = {}  # object -> set of (relation, place) it rests on / is in, from recorded edges
        for edge, sign in _edges_after(episode, meta["step"]):
            if edge["relation"] in ("ON", "INSIDE") and edge["from_id"] in moved:
                key = (edge["relation"], edge["to_id"])
                (
                    support.setdefault(edge["from_id"], set()).add
                    if sign > 0
                    else support.setdefault(edge["from_id"], set()).discard
                )(key)
        there = sorted(i for i in moved if (meta["relation"], meta["place"]) in support.get(i, set()))
        names = _labels(episode)
        expected = count_answer(sorted(names[i] for i in there), _wording(e)["answer_form"])
        assert _answer(e) == expected, e["episode_id"]


def _object_rooms(episode, obj):
    """The room ``obj`` is in after each step from its first pick-up on, from recorded edges alone.

    A pick-up puts the object in the picker's room (no edge is recorded when it already was there);
    people's rooms start from ``people_rooms`` and follow their recorded INSIDE-room edges.
    """
    nodes = program_by_id(episode["graph_id"]).graphs()[0]["nodes"]
    rooms = {n["id"] for n in nodes if n["category"] == "Rooms"}
    people = _people(episode)
    where = dict(zip(people, episode["people_rooms"], strict=True))
    after, current = {}, None
    for index, step in enumerate(episode["steps"]):
        for edge in step["edges_added"]:
            if edge["relation"] == "INSIDE" and edge["to_id"] in rooms and edge["from_id"] in people:
                where[edge["from_id"]] = edge["to_id"]
        if current is None and step["success"] and step["verb"] == "GRAB" and step["object_ids"][0] == obj:
            current = where[people[step["actor"]]]
        for edge in step["edges_added"]:
            moved_room = edge["from_id"] == obj and edge["relation"] == "INSIDE" and edge["to_id"] in rooms
            if current is not None and moved_room:
                current = edge["to_id"]
        if current is not None:
            after[index] = current
    return after


def test_object_paths_and_locations_recomputed_from_recorded_edges(corpus, episodes):
    for e in _examples(corpus, "object_path") + _examples(corpus, "object_location"):
        episode, meta = episodes[e["episode_id"]], json.loads(e["meta"])
        nodes = program_by_id(episode["graph_id"]).graphs()[0]["nodes"]
        names = {n["id"]: n["class_name"].replace("_", " ") for n in nodes}
        after = _object_rooms(episode, meta["object"])
        if e["task"] == "object_path":
            path = []
            for index in sorted(after):
                if not path or path[-1] != after[index]:
                    path.append(after[index])
            assert _answer(e) == ", ".join(names[r] for r in path)
        else:
            assert _answer(e) == names[after[meta["step"] - 1]]
            assert sorted(e["choices"]) == sorted(names[n["id"]] for n in nodes if n["category"] == "Rooms")


def test_state_tracking_answers_recomputed_by_re_executing_the_prefix(corpus, episodes):
    checked = Counter()
    for task in ("state_tracking_open", "state_tracking_holding", "state_tracking_grab"):
        for e in _examples(corpus, task)[:15]:
            episode, meta = episodes[e["episode_id"]], json.loads(e["meta"])
            sim = VirtualHomeSimulator(program_by_id(episode["graph_id"]).graphs()[0])
            for room in episode["people_rooms"][1:]:
                sim.state.add_character(room)
            for step in episode["steps"][: meta["step"]]:
                assert sim.step(Action.parse(step["action"]), step["actor"]).success == step["success"]
            answer = _answer(e)
            if task == "state_tracking_open":
                assert answer == ("yes" if "OPEN" in sim.states_of(meta["object"]) else "no")
                # answerable from the story: a told step opened or closed the object
                told = [
                    (s["verb"], s["object_ids"]) for s in episode["steps"][: meta["step"]] if s["success"]
                ]
                assert ("OPEN", [meta["object"]]) in told or ("CLOSE", [meta["object"]]) in told
            elif task == "state_tracking_holding":
                held = sorted(_labels(episode)[i] for i in sim.holds(meta["person"]))
                assert answer == join_names(held)
            else:
                result = sim.step(
                    Action.parse(f"[GRAB] <{sim.name(meta['object'])}> ({meta['object']})"), meta["person"]
                )
                assert answer == "yes" if result.success else answer.startswith("no, ")
                if not result.success:
                    thing = _labels(episode)[meta["object"]]
                    assert meta["name"] in e["prompt"] and f"the {thing}" in e["prompt"]
                    words = {sim.state.char_ids[meta["person"]]: meta["name"], meta["object"]: f"the {thing}"}
                    assert answer == "no, " + humanize(result.failure, words)
            checked[task] += 1
    assert min(checked.values()) > 0


def test_length_is_the_horizon_the_question_covers(corpus, episodes):
    for e in _examples(corpus, "state_tracking_holding"):
        assert 1 <= e["length"] == json.loads(e["meta"])["step"] <= episodes[e["episode_id"]]["num_steps"]
    for e in _examples(corpus, "counting"):
        assert e["length"] == json.loads(e["meta"])["step"] <= episodes[e["episode_id"]]["num_steps"]


def test_counting_asks_after_a_prefix_in_train_only(corpus, episodes):
    # the curriculum: train episodes are also asked after a shorter prefix; every other split after the whole
    # story, once per episode
    def whole(e):
        return e["length"] == episodes[e["episode_id"]]["num_steps"]

    for split in corpus:
        counting = [e for e in corpus[split] if e["task"] == "counting"]
        ids = [e["episode_id"] for e in counting]
        if split == "train":
            assert any(not whole(e) for e in counting) and max(Counter(ids).values()) == 2
        else:
            assert all(whole(e) for e in counting) and len(ids) == len(set(ids)), split


def test_no_test_prompt_or_plan_reaches_train(corpus):
    test = [e for s in ("test_seen", "test_unseen") for e in corpus[s]]
    prompts = {e["prompt"] for e in test}
    plans = {json.loads(e["meta"]).get("plan") for e in test} - {None}
    for split in ("train", "validation"):
        for e in corpus[split]:
            assert e["prompt"] not in prompts
            assert json.loads(e["meta"]).get("plan") not in plans


def test_kshot_prompts_draw_demonstrations_from_train_only(corpus):
    # a train example prompted few-shot keeps its own prompt after the last demonstration
    train_solved = {e["prompt_kshot"].split("\n\n")[-1] + e["completion"] for e in corpus["train"]}
    for split in ("test_unseen", "validation"):
        for e in corpus[split].select(range(min(40, len(corpus[split])))):
            assert e["prompt_kshot"].endswith(e["prompt"])
            demos = e["prompt_kshot"][: -len(e["prompt"])].split("\n\n")[:-1]
            assert 0 < len(demos) <= 3
            assert all(d in train_solved for d in demos)


def test_build_is_deterministic_by_seed(rollouts, corpus, tmp_path):
    again = tmp_path / "again"
    other = tmp_path / "other"
    tasks = ("counting", "object_location", "state_tracking_grab")
    build(BuildConfig(rollouts=str(rollouts), out=str(again), tasks=tasks), progress=False)
    build(BuildConfig(rollouts=str(rollouts), out=str(other), tasks=tasks, seed=1), progress=False)
    same = open_corpus(str(again))
    different = open_corpus(str(other))
    for split in corpus:
        assert same[split]["prompt"] == [e["prompt"] for e in corpus[split] if e["task"] in tasks]
    assert same["train"]["prompt"] != different["train"]["prompt"]


def test_exports_load_with_datasets_and_the_card_tells_true_sizes(corpus, corpus_dir):
    for split, ds in corpus.items():
        exported = datasets.load_dataset(
            "json", data_files=str(corpus_dir / "jsonl" / f"{split}.jsonl"), split="train"
        )
        assert exported["prompt"] == ds["prompt"] and exported["label"] == ds["label"]
    card = (corpus_dir / "README.md").read_text()
    assert card.startswith("---\n") and "license: mit" in card
    splits = list(corpus)
    for task in TASKS:
        row = re.search(rf"^\| {task} \|[^|]*\|(.*)\|$", card, re.M)
        assert row, task
        sizes = [int(x) for x in row.group(1).split("|")]
        assert sizes == [Counter(corpus[s]["task"])[task] for s in splits]
    total = re.search(r"^\| \*\*total\*\* \| \|(.*)\|$", card, re.M).group(1)
    assert [int(x) for x in total.split("|")] == [len(corpus[s]) for s in splits]


def test_bad_input_is_one_line_error_and_writes_nothing(rollouts, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(E2WMError, match="no rollout shards"):
        build(BuildConfig(rollouts=str(tmp_path / "missing"), out=str(out)), progress=False)
    with pytest.raises(E2WMError, match="unknown task"):
        build(
            BuildConfig(rollouts=str(rollouts), out=str(out), tasks=("counting", "juggling")), progress=False
        )
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "random-00000-of-00001.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(E2WMError, match="unreadable shard"):
        build(BuildConfig(rollouts=str(corrupt), out=str(out)), progress=False)
    only_replay = tmp_path / "only_replay"
    collect(CollectConfig(agent="replay", out=str(only_replay), episodes=2), progress=False)
    with pytest.raises(E2WMError, match="gave no examples"):
        build(BuildConfig(rollouts=str(only_replay), out=str(out), tasks=("counting",)), progress=False)
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))


def test_stale_rollouts_are_detected(rollouts, tmp_path):
    shard = shard_files(rollouts)[0]
    rows = pq.read_table(shard).to_pylist()
    step = next(s for r in rows for s in r["steps"] if s["verb"] == "GRAB")
    step["success"] = not step["success"]
    broken = tmp_path / "broken"
    broken.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), broken / shard.name)
    with pytest.raises(E2WMError, match="stale or corrupt"):
        build(BuildConfig(rollouts=str(broken), out=str(tmp_path / "out")), progress=False)


def test_count_answer_forms():
    assert count_answer(["cup", "mug"], "digits-items") == "2: cup, mug"
    assert count_answer(["cup", "mug"], "words-items") == "two: cup, mug"
    assert count_answer([], "words-items") == "zero: none"
    assert count_answer(["cup"] * 3, "digits") == "3" and count_answer(["cup"] * 3, "words") == "three"


def test_balanced_choice_draws_each_answer_equally_often():
    # nine options answer "no", one answers "yes": drawn plainly, "yes" would come one time in ten
    options = [("no", i) for i in range(9)] + [("yes", 9)]
    rng = random.Random(0)
    n = 4000
    draws = Counter(balanced_choice(rng, options, lambda o: o[0]) for _ in range(n))
    # each answer has probability 1/2: five binomial standard deviations, sqrt(n / 4) each
    tolerance = 5 * (n / 4) ** 0.5
    assert abs(draws["yes", 9] - n / 2) < tolerance
    # within "no", each of the nine with probability 1/18 (standard deviation below sqrt(n / 18))
    assert all(abs(draws["no", i] - n / 18) < 5 * (n / 18) ** 0.5 for i in range(9))
    assert balanced_choice(random.Random(3), options, lambda o: o[0]) == balanced_choice(
        random.Random(3), options, lambda o: o[0]
    )


def test_yes_no_tracking_answers_are_not_one_sided(corpus):
    # drawn plainly, four in five "can P pick X up?" answers were "no": a model scored by always saying
    # it; drawn balanced within each episode, "yes" comes wherever the snapshot allows it
    for task in ("state_tracking_grab", "state_tracking_open"):
        answers = Counter(_answer(e).split(",")[0] for e in _examples(corpus, task))
        assert set(answers) == {"yes", "no"}
        assert min(answers.values()) / sum(answers.values()) > 1 / 3, (task, answers)


def test_transfer_splits_ask_the_test_episodes_in_held_out_wordings_only(corpus):
    train_layouts = {layout.name for layout in LAYOUTS["train"]}
    held_out_layouts = {layout.name for layout in LAYOUTS["held_out"]}
    for split in CORPUS_SPLITS:
        family = "held_out" if split in TRANSFER_SPLITS else "train"
        layouts = held_out_layouts if family == "held_out" else train_layouts
        for e in corpus[split]:
            wording = _wording(e)
            assert wording["family"] == family and wording["layout"] in layouts, (split, wording)
    for split in TRANSFER_SPLITS:
        source = corpus[split.removesuffix("_transfer")]
        # the same episodes and tasks as the in-template test split, so the same facts are asked
        assert sorted(zip(source["episode_id"], source["task"], strict=True)) == sorted(
            zip(corpus[split]["episode_id"], corpus[split]["task"], strict=True)
        )
    trained = "\n".join(corpus["train"]["prompt"])
    for task, families in QUESTIONS.items():
        for question in families["held_out"]:
            pattern = re.sub(r"\\\{\w+\\\}", ".+?", re.escape(question))
            assert not re.search(pattern, trained), (task, question)
        assert any(re.search(re.sub(r"\\\{\w+\\\}", ".+?", re.escape(q)), trained) for q in families["train"])


def test_transfer_kshot_demonstrations_are_held_out_wordings_of_train_episodes(corpus):
    test_prompts = {e["prompt"] for s in ("test_seen", "test_unseen", *TRANSFER_SPLITS) for e in corpus[s]}
    trained = {e["prompt"] for e in corpus["train"]}
    answer_labels = {layout.name: layout.answer for layout in LAYOUTS["held_out"]}
    for split in TRANSFER_SPLITS:
        for e in corpus[split].select(range(min(60, len(corpus[split])))):
            assert e["prompt_kshot"].endswith(e["prompt"]) and e["prompt_kshot"] != e["prompt"]
            demos = e["prompt_kshot"][: -len(e["prompt"])].split("\n\n")[:-1]
            assert 0 < len(demos) <= 3
            for demo in demos:
                prompt = demo[: demo.rindex(answer_labels[_wording(e)["layout"]]) + 1]
                assert prompt not in test_prompts and prompt not in trained


def test_a_share_of_train_examples_is_prompted_few_shot_tracking_ones_after_one_story(corpus):
    kshot = Counter()
    solved = {e["prompt"] + e["completion"] for e in corpus["train"]} | {
        e["prompt_kshot"].split("\n\n")[-1] + e["completion"] for e in corpus["train"]
    }
    for e in corpus["train"]:
        few_shot = e["prompt"] == e["prompt_kshot"] and "\n\n" in e["prompt"]
        kshot[e["task"] in TRACKING_TASKS, few_shot] += 1
        if few_shot and e["task"] in TRACKING_TASKS:
            # one solved example (a story, its question and answer), then the example's own story
            demo, own = e["prompt"].split("\n\n", 1)
            assert demo in solved and "\n\n" not in own
    shares = {t: kshot[t, True] / (kshot[t, True] + kshot[t, False]) for t in (False, True)}
    # the default shares are 0.2 (short prompts) and 0.1 (tracking); binomial bounds at these sizes
    for tracking, share in ((False, 0.2), (True, 0.1)):
        n = kshot[tracking, True] + kshot[tracking, False]
        assert abs(shares[tracking] - share) < 4 * (share * (1 - share) / n) ** 0.5, (tracking, n, shares)


def test_the_jsonl_export_reads_back_as_the_corpus(corpus_dir):
    saved = open_corpus(str(corpus_dir))
    exported = open_corpus(str(corpus_dir / "jsonl"))
    assert sorted(exported) == sorted(saved)
    for split in saved:
        assert exported[split]["prompt"] == saved[split]["prompt"]
        assert exported[split]["completion"] == saved[split]["completion"]


def test_the_corpus_folder_is_a_hub_dataset_with_a_config_per_task(corpus_dir, corpus, tmp_path):
    """``load_dataset(DIR)`` reads every task (the card's default ``all`` config) in the corpus's own order;
    ``load_dataset(DIR, TASK)`` one task."""
    everything = datasets.load_dataset(str(corpus_dir), cache_dir=str(tmp_path / "cache"))
    assert sorted(everything) == sorted(corpus)
    for split in corpus:
        assert everything[split]["prompt"] == corpus[split]["prompt"]
        assert everything[split].features == corpus[split].features
    counting = datasets.load_dataset(str(corpus_dir), "counting", cache_dir=str(tmp_path / "cache"))
    for split in counting:
        want = [e["prompt"] for e in corpus[split] if e["task"] == "counting"]
        assert set(counting[split]["task"]) == {"counting"} and counting[split]["prompt"] == want
    assert sorted(counting) == sorted(s for s in corpus if "counting" in corpus[s]["task"])


def test_trls_own_sft_script_trains_on_the_corpus_folder(corpus_dir, lm, tmp_path):
    out = tmp_path / "sft"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "trl"), "sft", "--model_name_or_path", str(lm),
         "--dataset_name", str(corpus_dir), "--max_steps", "1", "--per_device_train_batch_size", "2",
         "--max_length", "64", "--output_dir", str(out), "--report_to", "none", "--use_cpu", "true",
         "--bf16", "false", "--save_strategy", "no", "--eval_strategy", "no"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                            "HF_DATASETS_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.safetensors").is_file()
