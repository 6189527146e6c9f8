"""Questions about what a rendered episode has shown so far, answered from the simulator's state.

After every step the renderer asks (``episode_questions``), each when the available facts allow:

- ``holding``: "what is person 2 holding?" -> "nothing", "the mug" or "the mug and the plate" (names sorted);
- ``state``: "is the fridge open?" / "is the tv on?" -> "yes" or "no", of a touched object that can be
  open or closed (on or off) and whose name is unique in the episode;
- ``count``: "how many things were put in the fridge?" -> "0", "1", ... of a place something is put in (or
  on) at some step of the episode, counting the puts so far.

Which person, object and place a step asks about is drawn from a generator seeded by the episode's id, so
renders are deterministic. ``answer_matches`` scores a spoken answer: case, articles, a final full stop and
the order of the items held do not matter.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence

from e2wm.multimodal.video_io import Question

KINDS = ("holding", "state", "count")
_STATES = (("OPEN", "CLOSED", "open"), ("ON", "OFF", "on"))  # (yes, no, the word asked)


def episode_questions(
    times: Sequence[float],
    holders: Sequence[Mapping[int, int]],
    states: Sequence[Mapping[int, frozenset[str]]],
    puts: Sequence[tuple[str, str] | None],
    names: Mapping[int, str],
    people: int,
    seed: str,
) -> list[Question]:
    """The questions asked after each step ``k`` of an episode, at ``times[k]`` (its last frame's time).

    ``holders[k]``: held object -> person index, after step k; ``states[k]``: object -> its states after step
    k; ``puts[k]``: (place name, "in" or "on") if step k put something there, else None; ``names``: object
    -> name (every touched object); ``people``: how many act.
    """
    rng = random.Random(zlib.crc32(f"questions {seed}".encode()))
    counts = Counter(names.values())
    unique = [obj for obj, name in sorted(names.items()) if counts[name] == 1]
    places: dict[str, str] = {}
    for put in puts:
        if put is not None:
            place, preposition = put
            places[place] = "in" if "in" in (preposition, places.get(place)) else "on"
    done: dict[str, int] = dict.fromkeys(places, 0)
    questions = []
    for time, held, now, put in zip(times, holders, states, puts, strict=True):
        if put is not None:
            done[put[0]] += 1
        person = rng.randrange(people)
        items = sorted(f"the {names[obj]}" for obj, k in held.items() if k == person)
        answer = " and ".join(items) if items else "nothing"
        questions.append(Question(time, f"what is person {person + 1} holding?", answer, "holding"))
        asked = [(obj, yes, no, word) for obj in unique for yes, no, word in _STATES if {yes, no} & now[obj]]
        if asked:
            obj, yes, _, word = rng.choice(asked)
            answer = "yes" if yes in now[obj] else "no"
            questions.append(Question(time, f"is the {names[obj]} {word}?", answer, "state"))
        if places:
            place = rng.choice(sorted(places))
            text = f"how many things were put {places[place]} the {place}?"
            questions.append(Question(time, text, str(done[place]), "count"))
    return questions


def draw_questions(questions: Sequence[Question], count: int, seed: int, name: str) -> list[Question]:
    """Up to ``count`` of ``questions``, drawn by ``seed`` and ``name`` (a clip's), in their order."""
    if count >= len(questions):
        return list(questions)
    rng = random.Random(f"{seed} {name}")
    return [questions[i] for i in sorted(rng.sample(range(len(questions)), count))]


def _items(text: str) -> list[str]:
    text = " ".join(text.lower().replace(",", " and ").split()).rstrip(".?!")
    words = [w for w in text.split() if w not in ("the", "a", "an")]
    return sorted(" ".join(words).split(" and "))


def answer_matches(said: str, answer: str) -> bool:
    """Whether ``said`` gives ``answer``: the same items, whatever their order, case, articles or final
    full stop."""
    return _items(said) == _items(answer)
