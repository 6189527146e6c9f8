"""Checking plain-English plans (the ``plan_generation`` task) by executing them in the simulator.

A plan is split into steps, each step is parsed into a verb and object names (the phrasing of
:func:`e2wm.simulator.text.describe_action`, plus a few common synonyms), the names are grounded to scene
graph nodes, and the steps are executed in order from the episode's initial state.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from e2wm.agents.goals import Predicate
from e2wm.errors import E2WMError
from e2wm.rollouts.replay import initial_graph, start
from e2wm.simulator.protocol import Action, Target
from e2wm.simulator.text import VERB_WORDS
from e2wm.simulator.virtualhome import resources
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator

# Plain-English verb phrase -> simulator verb. "put" is resolved by its preposition (PUTBACK / PUTIN).
_PHRASES: dict[str, str] = {words: verb for verb, words in VERB_WORDS.items() if words != "put"}
_PHRASES.update(
    {
        "put": "PUT",
        "place": "PUT",
        "go to": "WALK",
        "walk into": "WALK",
        "walk": "WALK",
        "go into": "WALK",
        "enter": "WALK",
        "run": "RUN",
        "turn on": "SWITCHON",
        "turn off": "SWITCHOFF",
        "pick up": "GRAB",
        "take": "GRAB",
        "sit down on": "SIT",
        "sit in": "SIT",
        "lie down on": "LIE",
        "drink": "DRINK",
        "type": "TYPE",
        "look": "LOOKAT",
        "get up": "STANDUP",
    }
)
_ORDERED = sorted(_PHRASES, key=lambda p: (-len(p.split()), -len(p)))
_ZERO_ARITY = {"STANDUP", "SLEEP", "WAKEUP"}
_PUT_PREPOSITIONS = {"on": "PUTBACK", "onto": "PUTBACK", "in": "PUTIN", "into": "PUTIN", "inside": "PUTIN"}
_POUR_PREPOSITIONS = ("into", "in", "onto", "on")
_ARTICLES = {"the", "a", "an", "some", "your", "my", "his", "her", "their", "its"}
_MARKER = re.compile(r"^\s*(?:(?:step\s*)?\d+\s*[.):\-]?|[-*\u2022]|[a-z]\))\s*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")
_CHATTER = re.compile(
    r"\s*(?:[,;:(]|\.\.\.|\b(?:and|then|so|until|while|before|after|because|to|for|from|with|using|"
    r"if|when|which|that)\b).*$"
)
_KEEP = ("basket for clothes", "after shave")  # class names that contain a chatter word
_MAX_TRIES = 6  # candidate nodes tried per object when a name is ambiguous


@dataclass(frozen=True)
class ParsedStep:
    """One sentence of a plan: its verb and object class names, or why it did not parse."""

    text: str
    verb: str | None = None
    objects: tuple[str, ...] = ()
    error: str | None = None
    phrases: tuple[str, ...] = ()  # the object phrases before trailing chatter was cut, for grounding

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class StepOutcome:
    """One plan step: its grounded action (None: not parsed or grounded), and why it failed."""

    text: str
    action: Action | None
    success: bool
    failure: str | None = None


@dataclass
class PlanCheck:
    """Executability (fraction of steps that executed), goal success, and per-step outcomes."""

    executability: float
    goal_success: bool
    steps: list[StepOutcome] = field(default_factory=list)


# --- parsing --------------------------------------------------------------------------------------------


def _segments(text: str) -> list[str]:
    out = []
    for piece in _SENTENCE_END.split(text):
        for _ in range(3):  # "- Step 2: ..." carries more than one marker
            piece = _MARKER.sub("", piece, count=1).strip()
        if re.search(r"[a-z]", piece, re.IGNORECASE):
            out.append(piece)
    return out


def _name(phrase: str) -> str:
    """``the Dining Room`` -> ``dining_room``."""
    words = re.sub(r"[^a-z0-9' ]+", " ", phrase.lower()).split()
    while words and words[0] in _ARTICLES:
        words = words[1:]
    return "_".join(w.strip("'") for w in words if w.strip("'"))


def _split_on(rest: str, prepositions: Sequence[str]) -> tuple[str, str, str] | None:
    """The first of ``prepositions`` (as a whole word) in ``rest``: (before, preposition, after)."""
    best = None
    for prep in prepositions:
        m = re.search(rf"\s\b{prep}\b\s", rest)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), m.end(), prep)
    if best is None:
        return None
    return rest[: best[0]], best[2], rest[best[1] :]


def _cut(phrase: str) -> str:
    for name in _KEEP:
        phrase = re.sub(rf"\b{name}\b", name.replace(" ", "_"), phrase)
    return _CHATTER.sub("", phrase).strip(" .!?\"'")


def parse_step(sentence: str) -> ParsedStep:
    """Parse one sentence, e.g. ``Put the cup in the sink.`` -> (PUTIN, (cup, sink)); never raises."""
    text = sentence.strip()
    low = " ".join(re.sub(r"[\"`*_]", " ", text.lower()).split()).strip(" .!?")
    low = re.sub(r"^(?:please|now|next|then|first|finally|lastly|after that)\b[, ]*", "", low).strip()
    phrase = next((p for p in _ORDERED if low == p or low.startswith(p + " ")), None)
    if phrase is None:
        return ParsedStep(text, error="no known verb")
    verb, rest = _PHRASES[phrase], low[len(phrase) :].strip()
    if verb in _ZERO_ARITY:
        return ParsedStep(text, verb)
    if verb in ("PUT", "POUR"):
        split = _split_on(rest, list(_PUT_PREPOSITIONS) if verb == "PUT" else _POUR_PREPOSITIONS)
        if split is None:
            return ParsedStep(text, "PUTBACK" if verb == "PUT" else verb, error="missing destination")
        first, prep, second = split
        verb = _PUT_PREPOSITIONS[prep] if verb == "PUT" else verb
        raw = (first, second)
    else:
        raw = (rest,)
    names = tuple(_name(_cut(r)) for r in raw)
    if not all(names):
        return ParsedStep(text, verb, error="missing object")
    return ParsedStep(text, verb, names, phrases=tuple(_name(r) for r in raw))


def parse_plan(text: str) -> list[ParsedStep]:
    """Split a plan into steps (sentences, lines, numbered or bulleted items) and parse each.

    Unparsable sentences before the first and after the last parsable one (preamble, trailing chatter)
    are dropped; a plan with no parsable sentence keeps them all, as errors.
    """
    if not isinstance(text, str):
        return []
    steps = [parse_step(s) for s in _segments(text)]
    parsed = [i for i, s in enumerate(steps) if s.verb is not None]
    if not parsed:
        return steps
    return steps[parsed[0] : parsed[-1] + 1]


# --- grounding ------------------------------------------------------------------------------------------


@functools.cache
def _equivalence() -> dict[str, list[str]]:
    return resources.name_equivalence()


def _resolve(name: str, phrase: str, by_class: dict[str, list[int]]) -> str | None:
    """The scene's class for a name: the longest known prefix of the uncut phrase (``basket for clothes``),
    in singular or plural, else a synonym from the executor's equivalence table."""
    words = (phrase or name).split("_")
    for k in range(len(words), 0, -1):
        form = "_".join(words[:k])
        for variant in (form, form.removesuffix("s"), form.removesuffix("es")):
            if variant in by_class:
                return variant
    equivalence = _equivalence()
    for cls in by_class:
        if name in equivalence.get(cls, ()) or cls in equivalence.get(name, ()):
            return cls
    return None


class _Grounder:
    """Grounds steps in order, following the episode's own steps where the plan does the same thing."""

    def __init__(self, scene_graph: dict[str, Any], episode: dict[str, Any] | None):
        self.by_class: dict[str, list[int]] = {}
        for node in sorted(scene_graph.get("nodes", ()), key=lambda n: n["id"]):
            self.by_class.setdefault(node["class_name"], []).append(node["id"])
        self.episode_steps: list[tuple[str | None, tuple[str, ...], tuple[int, ...]]] = []
        self.used: dict[str, list[int]] = {}  # class -> ids the episode used, in order of first use
        for step in (episode or {}).get("steps") or ():
            names = tuple(step.get("object_names") or ())
            ids = tuple(step.get("object_ids") or ())
            if step.get("success", True) and not step.get("actor"):  # the plan is the first character's
                self.episode_steps.append((step.get("verb"), names, ids))
            for name, node_id in zip(names, ids, strict=False):
                if node_id not in self.used.setdefault(name, []):
                    self.used[name].append(node_id)
        self.pos = 0

    def options(self, step: ParsedStep) -> tuple[list[Action], str | None]:
        """Grounded actions for a step, best first, or the reason there are none."""
        if step.error is not None or step.verb is None:
            return [], step.error or "no verb"
        classes = []
        for name, phrase in zip(step.objects, step.phrases or step.objects, strict=False):
            cls = _resolve(name, phrase, self.by_class)
            if cls is None:
                return [], f"no {name.replace('_', ' ')} in the scene"
            classes.append(cls)
        aligned: tuple[int, ...] = ()
        for j in range(self.pos, len(self.episode_steps)):
            verb, names, ids = self.episode_steps[j]
            if names == tuple(classes) and verb in (None, step.verb):
                aligned, self.pos = ids, j + 1
                break
        per_object = []
        for k, cls in enumerate(classes):
            own = [i for i in self.used.get(cls, ()) if i in self.by_class[cls]]
            ids = own or self.by_class[cls][:1]
            if aligned and aligned[k] in self.by_class[cls]:
                ids = [aligned[k]] + [i for i in ids if i != aligned[k]]
            per_object.append([Target(cls, i) for i in ids[:_MAX_TRIES]])
        return [Action(step.verb, tuple(t)) for t in itertools.product(*per_object)], None


def ground(
    steps: Sequence[ParsedStep], scene_graph: dict[str, Any], episode: dict[str, Any] | None = None
) -> list[Action | None]:
    """Map each step's names to node ids: the ids ``episode`` used for that name (the id of the matching
    episode step where the plan follows the episode), else the lowest id of the class in ``scene_graph``.
    Unparsed steps and unknown names give None."""
    grounder = _Grounder(scene_graph, episode)
    out: list[Action | None] = []
    for step in steps:
        options, _ = grounder.options(step)
        out.append(options[0] if options else None)
    return out


# --- checking -------------------------------------------------------------------------------------------


def _try(sim: VirtualHomeSimulator, options: list[Action]) -> tuple[Action | None, str | None]:
    """Execute the first option that succeeds; a failed step leaves the state unchanged."""
    failure = None
    for action in options:
        try:
            result = sim.step(action)
        except E2WMError as exc:
            failure = str(exc)
            continue
        if result.success:
            return action, None
        failure = failure or result.failure
    return None, failure or "precondition failed"


def check_plan(
    text: str,
    episode: dict[str, Any],
    sim: VirtualHomeSimulator | None = None,
    scene_graph: dict[str, Any] | None = None,
) -> PlanCheck:
    """Execute a plain-English plan from ``episode``'s initial state and check its goal; never raises on
    bad plan text. A name the episode used for several nodes tries them in order of first use."""
    steps = parse_plan(text)
    graph = scene_graph if scene_graph is not None else initial_graph(episode)
    sim = sim or VirtualHomeSimulator()
    start(episode, sim, graph)
    grounder = _Grounder(graph, episode)
    outcomes = []
    for step in steps:
        options, why = grounder.options(step)
        if not options:
            outcomes.append(StepOutcome(step.text, None, False, why))
            continue
        action, failure = _try(sim, options)
        outcomes.append(StepOutcome(step.text, action or options[0], action is not None, failure))
    executability = sum(o.success for o in outcomes) / len(outcomes) if outcomes else 0.0
    goal = [Predicate(**p) for p in episode.get("goal") or ()]
    goal_success = bool(goal) and all(p.holds(sim) for p in goal)
    return PlanCheck(executability, goal_success, outcomes)
