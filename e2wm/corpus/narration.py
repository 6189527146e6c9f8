"""Templated English narration of episodes: several templates per event, names, pronouns, connectives.

Choices are made by the caller's seeded ``random.Random``; no language model is involved. A walk
that takes a person into another room names the room, so a reader can follow where people and the
things they carry go. Styles (``e2wm.corpus.wording.NARRATIONS``): ``present`` (present-tense prose),
``numbered`` (present-tense sentences numbered as steps) and ``past`` (past-tense prose).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from e2wm.corpus.trace import Trace
from e2wm.simulator.text import VERB_WORDS

PEOPLE = [
    ("Mary", "she"),
    ("John", "he"),
    ("Alice", "she"),
    ("Bob", "he"),
    ("Emma", "she"),
    ("David", "he"),
    ("Sofia", "she"),
    ("Liam", "he"),
    ("Nora", "she"),
    ("Omar", "he"),
]

# Present-tense templates per verb; {s} subject, {o} object, {d} destination, {r} room.
TEMPLATES: dict[str, list[str]] = {
    "WALK_ROOM": ["{s} walks to the {r}.", "{s} goes into the {r}.", "{s} heads to the {r}."],
    "WALK_TO_ROOM": [
        "{s} walks to the {o} in the {r}.",
        "{s} goes over to the {o} in the {r}.",
        "{s} heads to the {r} and goes to the {o}.",
    ],
    "WALK": ["{s} walks over to the {o}.", "{s} goes to the {o}.", "{s} approaches the {o}."],
    "GRAB": ["{s} picks up the {o}.", "{s} grabs the {o}.", "{s} takes the {o}."],
    "PUTBACK": [
        "{s} puts the {o} on the {d}.",
        "{s} places the {o} on the {d}.",
        "{s} sets the {o} down on the {d}.",
    ],
    "PUTIN": [
        "{s} puts the {o} in the {d}.",
        "{s} places the {o} inside the {d}.",
        "{s} stores the {o} in the {d}.",
    ],
    "OPEN": ["{s} opens the {o}.", "{s} pulls the {o} open."],
    "CLOSE": ["{s} closes the {o}.", "{s} shuts the {o}."],
    "SWITCHON": ["{s} switches on the {o}.", "{s} turns on the {o}.", "{s} turns the {o} on."],
    "SWITCHOFF": ["{s} switches off the {o}.", "{s} turns off the {o}.", "{s} turns the {o} off."],
    "DROP": ["{s} drops the {o}.", "{s} lets go of the {o}."],
    "SIT": ["{s} sits down on the {o}.", "{s} takes a seat on the {o}."],
    "LIE": ["{s} lies down on the {o}.", "{s} stretches out on the {o}."],
    "STANDUP": ["{s} stands up.", "{s} gets up."],
    "POUR": ["{s} pours the {o} into the {d}."],
    "DRINK": ["{s} drinks from the {o}."],
    "READ": ["{s} reads the {o}.", "{s} leafs through the {o}."],
    "WATCH": ["{s} watches the {o}."],
    "TYPE": ["{s} types on the {o}."],
    "PLUGIN": ["{s} plugs in the {o}."],
    "PLUGOUT": ["{s} unplugs the {o}."],
    "PUTON": ["{s} puts on the {o}."],
    "PUTOFF": ["{s} takes off the {o}."],
}
# Past-tense event phrases, for questions like "Where was the mug before Mary opened the fridge?"
PAST = {
    "WALK": "walked to the {o}",
    "GRAB": "picked up the {o}",
    "PUTBACK": "put the {o} on the {d}",
    "PUTIN": "put the {o} in the {d}",
    "OPEN": "opened the {o}",
    "CLOSE": "closed the {o}",
    "SWITCHON": "switched on the {o}",
    "SWITCHOFF": "switched off the {o}",
    "DROP": "dropped the {o}",
    "SIT": "sat down on the {o}",
    "LIE": "lay down on the {o}",
    "STANDUP": "stood up",
    "POUR": "poured the {o} into the {d}",
    "DRINK": "drank from the {o}",
    "READ": "read the {o}",
    "WATCH": "watched the {o}",
    "TYPE": "typed on the {o}",
    "PLUGIN": "plugged in the {o}",
    "PLUGOUT": "unplugged the {o}",
    "PUTON": "put on the {o}",
    "PUTOFF": "took off the {o}",
    "RUN": "ran to the {o}",
    "FIND": "found the {o}",
    "PUTOBJBACK": "put back the {o}",
    "RELEASE": "released the {o}",
    "LOOKAT": "looked at the {o}",
    "TURNTO": "turned to the {o}",
    "POINTAT": "pointed at the {o}",
    "TOUCH": "touched the {o}",
    "WIPE": "wiped the {o}",
    "WASH": "washed the {o}",
    "RINSE": "rinsed the {o}",
    "SCRUB": "scrubbed the {o}",
    "SQUEEZE": "squeezed the {o}",
    "CUT": "cut the {o}",
    "EAT": "ate the {o}",
    "GREET": "greeted the {o}",
    "PUSH": "pushed the {o}",
    "PULL": "pulled the {o}",
    "MOVE": "moved the {o}",
    "SLEEP": "slept",
    "WAKEUP": "woke up",
}
# Past-tense walks that name the room (the other verbs use PAST).
PAST_WALKS = {
    "WALK_ROOM": ["{s} walked to the {r}.", "{s} went into the {r}."],
    "WALK_TO_ROOM": ["{s} walked to the {o} in the {r}.", "{s} went over to the {o} in the {r}."],
}
CONNECTIVES = ["Then", "After that,", "Next,", "Later,"]


@dataclass(frozen=True)
class Person:
    name: str
    pronoun: str


def cast(trace: Trace, rng: random.Random) -> list[Person]:
    """Names for the episode's people, drawn by ``rng``."""
    return [Person(*p) for p in rng.sample(PEOPLE, len(trace.people))]


def _third_person(verb: str) -> str:
    """``{s} switches on the {o}.`` for verbs without templates of their own."""
    first, *rest = VERB_WORDS.get(verb, verb.lower()).split()
    first += "es" if first.endswith(("sh", "ch", "s", "x")) else "s"
    return " ".join(["{s}", first, *rest, "the {o}."])


def _objects(trace: Trace, step: dict) -> dict[str, str]:
    names = [trace.label(i) for i in step["object_ids"]]
    return {"o": names[0] if names else "", "d": names[1] if len(names) > 1 else ""}


def event(trace: Trace, index: int, people: list[Person]) -> str:
    """Step ``index`` as a past-tense phrase with its actor: ``Mary opened the fridge``."""
    step = trace.steps[index]
    phrase = PAST.get(step["verb"], step["action_text"].rstrip(".").lower())
    return f"{people[step['actor']].name} " + phrase.format(**_objects(trace, step))


def opening(trace: Trace, people: list[Person], style: str = "present") -> str:
    """Where everyone is at the start."""
    first = trace.snapshots[0]
    verb = "was" if style == "past" else "is"
    where = [
        f"{p.name} {verb} in the {trace.name(first.rooms[trace.people[k]])}" for k, p in enumerate(people)
    ]
    lead = "At the start" if style == "past" else "At first"
    if len(where) == 1:
        return f"{lead}, {where[0]}."
    return f"{lead}, " + ", ".join(where[:-1]) + " and " + where[-1] + "."


def _template(verb: str, style: str, rng: random.Random) -> str:
    if style == "past":
        if verb in PAST_WALKS:
            return rng.choice(PAST_WALKS[verb])
        return "{s} " + PAST.get(verb, VERB_WORDS.get(verb, verb.lower()) + " the {o}") + "."
    return rng.choice(TEMPLATES.get(verb) or [_third_person(verb)])


def narrate(
    trace: Trace, people: list[Person], rng: random.Random, upto: int | None = None, style: str = "present"
) -> list[str]:
    """One sentence per successful step (of the first ``upto`` steps), after the opening."""
    sentences = [opening(trace, people, style)]
    previous = None
    for index, step in enumerate(trace.steps[:upto]):
        if not step["success"]:
            continue
        actor = step["actor"]
        person = people[actor]
        subject = person.pronoun if actor == previous and rng.random() < 0.6 else person.name
        before, after = trace.snapshots[index], trace.snapshots[index + 1]
        char = trace.people[actor]
        fields = _objects(trace, step)
        verb = step["verb"]
        if verb == "WALK":
            target = step["object_ids"][0]
            room = after.rooms[char]
            if trace.categories[target] == "Rooms":
                verb = "WALK_ROOM"
            elif room != before.rooms[char]:
                verb = "WALK_TO_ROOM"
            fields["r"] = trace.name(room)
        sentence = _template(verb, style, rng).format(s=subject, **fields)
        if previous is not None and style != "numbered" and rng.random() < 0.25:
            sentence = f"{rng.choice(CONNECTIVES)} {sentence}"
        sentences.append(sentence[0].upper() + sentence[1:])
        previous = actor
    if style == "numbered":
        return [sentences[0], *(f"{i}. {s}" for i, s in enumerate(sentences[1:], 1))]
    return sentences


def story(trace: Trace, people: list[Person], rng: random.Random, style: str, upto: int | None = None) -> str:
    """The narration as one text: prose on one line, numbered steps one per line."""
    return ("\n" if style == "numbered" else " ").join(narrate(trace, people, rng, upto, style))
