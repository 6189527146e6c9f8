"""Top-down videos of rollout episodes, with timestamped templated narration, for the multimodal model.

An episode is re-executed in the symbolic simulator (as ``e2wm.corpus.trace`` does) and drawn frame by
frame: the floor plan of the scene's rooms (their bounding boxes projected onto x/z when every room has
one; the shipped TrimmedTestScene1 graphs have none, so rooms are then laid out on a grid in id order),
the objects the episode touches as small squares coloured by state (on, open, off, closed, else plain;
held objects travel beside their holder), and each person as a coloured dot. With ``style="sprites"`` each
object class has its own shape, pattern and colour instead, and the acting person shows it (sprites.py). An
object without a bounding box sits at a fixed spot of its room (a hash of its id, and of ``layout_seed`` if
given: another layout, the grid's rooms shuffled too; with ``layout_per_episode`` also of the episode's id) or
beside what it is on or inside.

Timeline: ``lead_in`` frames of the initial state, then ``frames_per_step`` frames per step. In a step
the acting person moves, for its first ``move_fraction`` of frames, to stand beside what it acts on
(a room: the room's centre); the step's effect appears on the next frame; the caption is timed at the
step's last frame. Failed steps move nothing and say nothing. After a step, with chance ``pause_rate``,
the scene stands still for half a step to ``max_pause_steps`` steps (in half steps), so that narration
keeps no fixed rhythm or phase: when to speak must come from what moves. Without pauses step k's caption is at
``(lead_in + (k + 1) * frames_per_step - 1) / fps``. Rendering is deterministic (pauses are seeded by the
episode id).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import orjson
from tqdm import tqdm
from virtualhome_eval.simulation.evolving_graph.environment import Relation

from e2wm.errors import E2WMError, release
from e2wm.multimodal.questions import episode_questions
from e2wm.multimodal.sprites import RGB, Painter
from e2wm.multimodal.video_io import Caption, Clip
from e2wm.rollouts.replay import initial_graph, replay_steps, start, touched_objects
from e2wm.rollouts.shards import load_episodes
from e2wm.simulator.virtualhome import resources
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator
from e2wm.splits import SPLITS

STYLES = ("squares", "sprites")

# --- narration ---------------------------------------------------------------------------------------------

# Slot "verb" (a VirtualHome verb, lower case) -> caption template. {object} and {place} are the
# action's targets; a person's name ("person 2") starts the caption in episodes with several people,
# except for state captions, which say what became of the object.
TEMPLATES: dict[str, str] = {
    "walk": "walked to the {object}",
    "run": "ran to the {object}",
    "find": "found the {object}",
    "grab": "grabbed the {object}",
    "open": "the {object} is open now",
    "close": "the {object} is closed now",
    "switchon": "the {object} is on now",
    "switchoff": "the {object} is off now",
    "putback": "put the {object} on the {place}",
    "putin": "put the {object} in the {place}",
    "pour": "poured the {object} into the {place}",
    "putobjback": "put back the {object}",
    "drop": "dropped the {object}",
    "release": "released the {object}",
    "sit": "sat on the {object}",
    "lie": "lay on the {object}",
    "standup": "stood up",
    "sleep": "fell asleep",
    "wakeup": "woke up",
    "drink": "drank from the {object}",
    "eat": "ate the {object}",
    "read": "read the {object}",
    "watch": "watched the {object}",
    "type": "typed on the {object}",
    "plugin": "plugged in the {object}",
    "plugout": "unplugged the {object}",
    "puton": "put on the {object}",
    "putoff": "took off the {object}",
    "lookat": "looked at the {object}",
    "turnto": "turned to the {object}",
    "pointat": "pointed at the {object}",
    "touch": "touched the {object}",
    "greet": "greeted the {object}",
    "wipe": "wiped the {object}",
    "wash": "washed the {object}",
    "rinse": "rinsed the {object}",
    "scrub": "scrubbed the {object}",
    "squeeze": "squeezed the {object}",
    "cut": "cut the {object}",
    "push": "pushed the {object}",
    "pull": "pulled the {object}",
    "move": "moved the {object}",
}
STATE_OF_VERB = {"open": "open", "close": "closed", "switchon": "on", "switchoff": "off"}
# The version of what a render writes: render caches (e2wm.training.train_video) key on it and on the
# settings, so that a change renders anew. 2: clips carry questions; 3: chroma from each 2x2 block's mean.
RENDER_FORMAT = 3
PUTS = {"putin": "in", "putback": "on"}  # verbs that put their object somewhere: the place's preposition
_VERB_ALIASES = {"lookat_short": "lookat", "lookat_long": "lookat"}


def caption_slots(verb: str, objects: Sequence[str], actor: str | None = None) -> dict[str, str]:
    """The event slots of a successful step: verb, object, place (second target), state, actor."""
    verb = _VERB_ALIASES.get(verb.lower(), verb.lower())
    if verb not in TEMPLATES:
        raise E2WMError(f"no caption template for verb [{verb.upper()}]")
    slots = {"verb": verb}
    for key, name in zip(("object", "place"), objects, strict=False):
        slots[key] = name.replace("_", " ")
    if verb in STATE_OF_VERB:
        slots["state"] = STATE_OF_VERB[verb]
    elif actor is not None:
        slots["actor"] = actor
    return slots


def caption_text(slots: Mapping[str, str]) -> str:
    """The caption of ``slots``: ``grabbed the mug``, ``person 2 walked to the kitchen``."""
    text = TEMPLATES[slots["verb"]].format(object=slots.get("object", ""), place=slots.get("place", ""))
    return f"{slots['actor']} {text}" if "actor" in slots else text


def _pattern(verb: str, template: str) -> re.Pattern[str]:
    body = (
        re.escape(template).replace(r"\{object\}", "(?P<object>.+?)").replace(r"\{place\}", "(?P<place>.+?)")
    )
    actor = "" if verb in STATE_OF_VERB else r"(?:(?P<actor>person \d+) )?"
    return re.compile(f"^{actor}{body}$")


_PATTERNS = {verb: _pattern(verb, template) for verb, template in TEMPLATES.items()}


def parse_caption(text: str) -> dict[str, str] | None:
    """The slots a templated caption states (the inverse of ``caption_text``), or None if none fits.

    Case, surrounding space and a final full stop are ignored; the first template that fits wins.
    """
    text = " ".join(text.lower().split()).rstrip(".")
    for verb, pattern in _PATTERNS.items():
        match = pattern.match(text)
        if match:
            slots = {"verb": verb, **{k: v for k, v in match.groupdict().items() if v is not None}}
            if verb in STATE_OF_VERB:
                slots["state"] = STATE_OF_VERB[verb]
            return slots
    return None


# --- configuration -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderConfig:
    """Frame size, timing and colours of rendered episodes."""

    size: int = field(default=64, metadata={"help": "frame width and height in pixels (even: yuv420p video)"})
    fps: int = field(default=16, metadata={"help": "frames per second (a step lasts frames_per_step frames)"})
    frames_per_step: int = 8
    lead_in: int = 8  # frames of the initial state before the first step
    # Share of a step's frames the acting person spends moving: 5 of 8, so the arrival and the effect fall in
    # the step's second 4-frame half, the feature step its caption is at, and show there.
    move_fraction: float = 0.625
    pause_rate: float = field(
        default=0.3,
        metadata={"help": "chance the scene stands still for a while after a step (0: a caption every step)"},
    )
    max_pause_steps: int = 2  # its length: half a step to this many steps' frames, in half steps
    background: RGB = (16, 16, 20)
    wall: RGB = (60, 60, 70)
    room_colours: tuple[RGB, ...] = (
        (190, 172, 140),
        (146, 176, 196),
        (170, 194, 150),
        (200, 160, 170),
        (172, 162, 206),
        (206, 194, 128),
    )
    person_colours: tuple[RGB, ...] = ((230, 30, 30), (30, 80, 240), (250, 140, 0), (150, 30, 200))
    plain: RGB = (250, 250, 250)  # an object with none of the states below
    on: RGB = (255, 235, 0)
    open: RGB = (0, 200, 70)
    off: RGB = (70, 70, 70)
    closed: RGB = (130, 60, 10)
    style: str = field(
        default="squares",
        metadata={
            "help": "how objects look: squares coloured by state, or sprites: a shape, pattern and colour "
            "per class (e2wm/multimodal/sprites.py)",
            "choices": STYLES,
        },
    )
    layout_seed: int | None = field(
        default=None,
        metadata={"help": "place objects (and rooms without bounding boxes) by this seed: other layouts"},
    )
    layout_per_episode: bool = field(
        default=False,
        metadata={
            "help": "place each episode's objects and rooms by its own seed (its episode id, with "
            "layout_seed): a layout per episode, so that where a thing stands tells nothing of what it is"
        },
    )

    def validate(self) -> None:
        if self.size < 16 or self.size % 2:
            raise E2WMError(f"--size must be even and at least 16, got {self.size}")
        if self.fps < 1 or self.frames_per_step < 2 or self.lead_in < 0:
            raise E2WMError("fps must be >= 1, frames_per_step >= 2 and lead_in >= 0")
        if not 0 < self.move_fraction <= 1:
            raise E2WMError(f"move_fraction must be in (0, 1], got {self.move_fraction}")
        if not 0 <= self.pause_rate <= 1 or self.max_pause_steps < 1:
            raise E2WMError(
                f"pause_rate must be in [0, 1] and max_pause_steps >= 1, got {self.pause_rate} "
                f"and {self.max_pause_steps}"
            )
        if not self.room_colours or not self.person_colours:
            raise E2WMError("room_colours and person_colours need at least one colour each")
        if self.style not in STYLES:
            raise E2WMError(f"unknown style {self.style!r}: choose from {', '.join(STYLES)}")

    @property
    def marker(self) -> int:
        """Half the side of an object's square (or sprite tile), in pixels."""
        return self.sprite // 2 + 1 if self.style == "sprites" else max(1, round(self.size / 48))

    @property
    def sprite(self) -> int:
        """The side of a sprite's shape (odd, so it centres on a pixel), without its 1-pixel outline.

        Measured: the 8 shapes x 4 patterns on a floor, through write_clip (H.264, CRF 18, yuv420p) at
        64x64 and back, binarised (any channel 40 off the floor), each nearest (mask IoU) to its own shape:
        28/32 at 5 px, 32/32 from 7 px on; but at 7 px the closest pair of shapes (with their outlines)
        differs in 5% of its pixels, at 9 px in 10%. So 9 px at the default 64 (tile 11 px: a room of the
        4-room grid holds several), scaled with the frame, never under 7.
        """
        return max(7, self.size * 9 // 64) | 1

    @property
    def radius(self) -> float:
        """A person's dot radius, in pixels."""
        return max(2.0, self.size / 24)

    def state_colour(self, states: frozenset[str]) -> RGB:
        for state in ("ON", "OPEN", "OFF", "CLOSED"):
            if state in states:
                return getattr(self, state.lower())
        return self.plain


# --- the episode, re-executed ------------------------------------------------------------------------------


@dataclass
class _Moment:
    """Who holds which touched object, what each rests on or in, and its states, before or after a step."""

    holder: dict[int, int]  # held object -> person index
    support: dict[int, int | None]  # object -> the non-room node it is on or inside
    states: dict[int, frozenset[str]]


def _moment(sim: VirtualHomeSimulator, objects: list[int], people: int) -> _Moment:
    holder = {obj: k for k in range(people) for obj in sim.holds(k)}
    support: dict[int, int | None] = {}
    for obj in objects:
        on = [
            i
            for rel in (Relation.ON, Relation.INSIDE)
            for i in sorted(sim.state.ids_from(obj, rel))
            if sim.node(i).category != "Rooms"
        ]
        support[obj] = on[0] if on else None
    return _Moment(holder, support, {obj: frozenset(sim.states_of(obj)) for obj in objects})


def _replay(
    episode: dict[str, Any], graph: dict[str, Any]
) -> tuple[VirtualHomeSimulator, list[int], list[_Moment]]:
    """Re-execute ``episode``: the simulator (back at the start), touched objects, moments between steps."""
    sim = VirtualHomeSimulator()
    people = len(start(episode, sim, graph))
    objects = touched_objects(episode, sim, skip=("Rooms", "Characters"))
    mark = sim.mark()
    moments = [_moment(sim, objects, people)]
    for _ in replay_steps(episode, sim):
        moments.append(_moment(sim, objects, people))
    sim.rollback(mark)  # back to the initial scene: the layout reads it
    return sim, objects, moments


# --- the floor plan ----------------------------------------------------------------------------------------


def _unit(*key: object) -> float:
    """A deterministic number in [0, 1) from ``key``."""
    return zlib.crc32(repr(key).encode()) / 2**32


def _box(node: Any) -> tuple[float, float, float, float] | None:
    """A node's bounding box projected onto x/z: (x0, z0, x1, z1), if it has one."""
    box = node.bounding_box
    try:
        (cx, _, cz), (sx, _, sz) = box["center"], box["size"]
        return cx - sx / 2, cz - sz / 2, cx + sx / 2, cz + sz / 2
    except (TypeError, KeyError, ValueError):
        return None


class _Plan:
    """The rooms in pixels, the floor-plan image, and where each node rests at the start."""

    def __init__(self, sim: VirtualHomeSimulator, config: RenderConfig, episode_id: object):
        self.sim, self.config = sim, config
        # Spots hashed with the seed, if any: another layout (no seed: the key, and so the spot, as before).
        self.seed = () if config.layout_seed is None else (config.layout_seed,)
        if config.layout_per_episode:
            self.seed = (*self.seed, "episode", str(episode_id))
        rooms = sorted(n.id for n in sim.state.get_nodes_by_attr("category", "Rooms"))
        if not rooms:
            raise E2WMError("scene graph: no rooms to draw")
        boxes = {r: _box(sim.node(r)) for r in rooms}
        self.boxes = all(boxes.values())
        if not self.boxes:
            cols = math.ceil(math.sqrt(len(rooms)))
            order = sorted(rooms, key=lambda r: _unit("room", r, *self.seed)) if self.seed else rooms
            boxes = {r: (i % cols, i // cols, i % cols + 1, i // cols + 1) for i, r in enumerate(order)}
        x0, z0 = min(b[0] for b in boxes.values()), min(b[1] for b in boxes.values())
        x1, z1 = max(b[2] for b in boxes.values()), max(b[3] for b in boxes.values())
        span = config.size - 3
        self.scale = span / max(x1 - x0, z1 - z0, 1e-6)
        self.origin = (
            1 + (span - (x1 - x0) * self.scale) / 2 - x0 * self.scale,
            1 + (span - (z1 - z0) * self.scale) / 2 - z0 * self.scale,
        )
        self.rooms = {r: self._pixels(b) for r, b in boxes.items()}
        self.image = np.empty((config.size, config.size, 3), np.uint8)
        self.image[:] = config.background
        for i, room in enumerate(rooms):
            left, top, right, bottom = (round(v) for v in self.rooms[room])
            cv2.rectangle(
                self.image,
                (left, top),
                (right, bottom),
                config.room_colours[i % len(config.room_colours)],
                -1,
            )
            cv2.rectangle(self.image, (left, top), (right, bottom), config.wall, 1)
        self._homes: dict[int, tuple[float, float]] = {}
        self._shown: list[tuple[float, float]] = []  # homes of the nodes drawn (asked for at depth 0)

    def _pixels(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        (ox, oz), s = self.origin, self.scale
        return ox + box[0] * s, oz + box[1] * s, ox + box[2] * s, oz + box[3] * s

    def room_centre(self, room: int) -> tuple[float, float]:
        left, top, right, bottom = self.rooms[room]
        return (left + right) / 2, (top + bottom) / 2

    def beside(
        self, node: int, anchor: tuple[float, float], salt: tuple[int, ...] = ()
    ) -> tuple[float, float]:
        """A spot next to ``anchor`` for ``node``: the side is a hash of the node id (and ``salt``)."""
        angle = 2 * math.pi * _unit("side", node, *self.seed, *salt)
        gap = 2 * self.config.marker + 1
        if self.config.style == "sprites":  # square tiles that do not overlap on a diagonal either
            gap /= max(abs(math.cos(angle)), abs(math.sin(angle)))
        return anchor[0] + gap * math.cos(angle), anchor[1] + gap * math.sin(angle)

    def home(self, node: int, depth: int = 0) -> tuple[float, float]:
        """Where a node rests in the initial scene, in pixels."""
        if node in self._homes:
            return self._homes[node]
        sim = self.sim
        box = _box(sim.node(node)) if self.boxes else None
        supports = [
            i
            for rel in (Relation.ON, Relation.INSIDE)
            for i in sorted(sim.state.ids_from(node, rel))
            if sim.node(i).category != "Rooms"
        ]
        room = sim.room_of(node)
        if box is not None:
            left, top, right, bottom = self._pixels(box)
            spot = (left + right) / 2, (top + bottom) / 2
        elif supports and depth < 4:
            anchor = self.home(supports[0], depth + 1)
            spot = self._clear(lambda salt: self.beside(node, anchor, salt))
        elif room is not None:
            left, top, right, bottom = self.rooms[room]
            inset = self.config.radius * 2 + self.config.marker

            def spot_in_room(salt: tuple[int, ...]) -> tuple[float, float]:
                u, v = _unit("x", node, *self.seed, *salt), _unit("z", node, *self.seed, *salt)
                return (
                    left + inset + u * max(right - left - 2 * inset, 0),
                    top + inset + v * max(bottom - top - 2 * inset, 0),
                )

            spot = self._clear(spot_in_room)
        else:
            spot = self.config.size / 2, self.config.size / 2
        self._homes[node] = spot
        if depth == 0:
            self._shown.append(spot)
        return spot

    def _clear(self, spot: Callable[[tuple[int, ...]], tuple[float, float]]) -> tuple[float, float]:
        """``spot(())``; in the sprites look, if it overlaps a shown node, the clearest of 8 salted tries:
        a sprite hidden under another loses its class."""
        first = spot(())
        if self.config.style != "sprites":
            return first

        def room_left(at: tuple[float, float]) -> float:  # square tiles: the larger of the x and y gaps
            return min((max(abs(at[0] - o[0]), abs(at[1] - o[1])) for o in self._shown), default=math.inf)

        if room_left(first) >= 2 * self.config.marker + 1:
            return first
        return max([first, *(spot((salt,)) for salt in range(1, 8))], key=room_left)


# --- rendering ---------------------------------------------------------------------------------------------


def _approach(start: tuple[float, float], target: tuple[float, float], stand: float) -> tuple[float, float]:
    """Where someone coming from ``start`` stops beside ``target``: ``stand`` pixels short of it."""
    dx, dy = start[0] - target[0], start[1] - target[1]
    distance = math.hypot(dx, dy)
    if distance <= stand:
        return start
    return target[0] + dx * stand / distance, target[1] + dy * stand / distance


@dataclass
class _Keyframes:
    """Everyone's position and where free objects rest before each step; where each step acts (None: a room
    or nothing)."""

    people: list[list[tuple[float, float]]] = field(default_factory=list)
    resting: list[dict[int, tuple[float, float]]] = field(default_factory=list)
    targets: list[tuple[float, float] | None] = field(default_factory=list)


def _keyframes(
    episode: dict[str, Any], plan: _Plan, objects: list[int], moments: list[_Moment]
) -> _Keyframes:
    config, sim = plan.config, plan.sim
    chars = sim.state.char_ids
    n = len(chars)
    spacing = 2 * config.radius + 2

    def in_room(k: int, room: int) -> tuple[float, float]:
        x, y = plan.room_centre(room)
        return x + (k - (n - 1) / 2) * spacing, y

    people = [in_room(k, room) for k, room in enumerate(episode["people_rooms"][:n])]
    resting = {obj: plan.home(obj) for obj in objects}
    frames = _Keyframes([list(people)], [dict(resting)])
    stand = config.radius + config.marker + 1
    if (
        config.style == "sprites"
    ):  # the actor's ring (2 px out) clear of the target's tile, even on a diagonal
        stand = config.radius + 3 + config.marker * math.sqrt(2)

    def where(node: int, moment: _Moment, people: list[tuple[float, float]]) -> tuple[float, float]:
        if node in chars:
            return people[chars.index(node)]
        if node in moment.holder:
            return people[moment.holder[node]]
        return resting[node] if node in resting else plan.home(node)

    for k, step in enumerate(episode["steps"]):
        before, after = moments[k], moments[k + 1]
        actor = step["actor"]
        people = list(people)
        spot = None
        if step["success"] and step["object_ids"]:
            target = step["object_ids"][-1]
            if sim.node(target).category == "Rooms":
                people[actor] = in_room(actor, target)
            else:
                spot = where(target, before, people)
                people[actor] = _approach(people[actor], spot, stand)
        frames.targets.append(spot)
        resting = dict(resting)
        for obj in objects:
            if obj in after.holder:
                continue
            if obj in before.holder:  # put somewhere, or dropped where its holder stands
                support = after.support[obj]
                anchor = where(support, after, people) if support is not None else people[before.holder[obj]]
                resting[obj] = plan.beside(obj, anchor) if support is not None else anchor
            elif after.support[obj] != before.support[obj] and after.support[obj] is not None:
                resting[obj] = plan.beside(obj, where(after.support[obj], after, people))
        frames.people.append(people)
        frames.resting.append(resting)
    return frames


def _draw(
    plan: _Plan,
    objects: list[int],
    moment: _Moment,
    resting: dict[int, tuple[float, float]],
    people: list[tuple[float, float]],
) -> np.ndarray:
    config = plan.config
    image = plan.image.copy()
    half = config.marker

    def square(x: float, y: float, colour: RGB) -> None:
        cx, cy = round(x), round(y)
        cv2.rectangle(image, (cx - half, cy - half), (cx + half, cy + half), colour, -1)

    for obj in objects:
        if obj not in moment.holder:
            square(*resting[obj], config.state_colour(moment.states[obj]))
    scale = 16  # cv2 draws at 1/16 pixel with shift=4: smooth motion
    for k, (x, y) in enumerate(people):
        colour = config.person_colours[k % len(config.person_colours)]
        cv2.circle(
            image,
            (round(x * scale), round(y * scale)),
            round(config.radius * scale),
            colour,
            -1,
            cv2.LINE_AA,
            4,
        )
    reach = config.radius + half
    hands = ((reach, -reach), (-reach, -reach), (reach, reach), (-reach, reach))
    held: dict[int, int] = {}
    for obj in objects:
        if obj in moment.holder:
            k = moment.holder[obj]
            dx, dy = hands[held.setdefault(k, 0) % len(hands)]
            held[k] += 1
            square(people[k][0] + dx, people[k][1] + dy, config.state_colour(moment.states[obj]))
    return image


def _smooth(p: float) -> float:
    return p * p * (3 - 2 * p)


def render_episode(
    episode: dict[str, Any], config: RenderConfig | None = None, graph: dict[str, Any] | None = None
) -> Clip:
    """Render an episode row (from ``e2wm collect``) to a clip named by its episode id.

    ``graph``: the episode's initial scene graph, for episodes collected on a user's scene graph
    (default: the shipped program graph ``episode["graph_id"]``).
    """
    config = config or RenderConfig()
    config.validate()
    graph = graph if graph is not None else initial_graph(episode)
    sim, objects, moments = _replay(episode, graph)
    plan = _Plan(sim, config, episode["episode_id"])
    keys = _keyframes(episode, plan, objects, moments)
    steps = episode["steps"]
    rng = random.Random(zlib.crc32(str(episode["episode_id"]).encode()))
    half = config.frames_per_step // 2  # pauses come in half steps, so events keep no fixed phase either
    pauses = [  # none after the last step
        rng.randint(1, 2 * config.max_pause_steps) * half
        if k < len(steps) - 1 and rng.random() < config.pause_rate
        else 0
        for k in range(len(steps))
    ]
    total = config.lead_in + len(steps) * config.frames_per_step + sum(pauses)
    if total == 0:
        raise E2WMError(f"episode {episode['episode_id']}: no steps and no lead-in: nothing to render")
    frames = np.empty((total, config.size, config.size, 3), np.uint8)
    painter = None
    if config.style == "sprites":
        painter = Painter(plan.image, config, {obj: sim.node(obj).class_name for obj in objects})
        frames[: config.lead_in] = painter.frame(moments[:1] * 2, keys.resting[:1] * 2, keys.people[0])
    else:
        frames[: config.lead_in] = _draw(plan, objects, moments[0], keys.resting[0], keys.people[0])
    moving = min(config.frames_per_step - 1, max(1, round(config.move_fraction * config.frames_per_step)))
    several = len(sim.state.char_ids) > 1
    captions, times, puts = [], [], []
    start = config.lead_in
    for k, (step, pause) in enumerate(zip(steps, pauses, strict=True)):
        actor = step["actor"]
        (x0, y0), (x1, y1) = keys.people[k][actor], keys.people[k + 1][actor]
        for i in range(config.frames_per_step):
            p = _smooth(min(1.0, (i + 1) / moving))
            people = list(keys.people[k])
            people[actor] = (x0 + (x1 - x0) * p, y0 + (y1 - y0) * p)
            after = i >= moving
            m = k + 1 if after else k
            if painter is None:
                frames[start + i] = _draw(plan, objects, moments[m], keys.resting[m], people)
                continue
            # What changes hands or places glides there over the step's frames after the arrival.
            landing = _smooth((i - moving + 1) / (config.frames_per_step - moving)) if after else 0.0
            frames[start + i] = painter.frame(
                (moments[k], moments[m]),
                (keys.resting[k], keys.resting[m]),
                people,
                landing,
                (actor, keys.targets[k], after) if step["success"] else None,
            )
        end = start + config.frames_per_step - 1
        times.append(end / config.fps)
        puts.append(None)
        if step["success"]:
            slots = caption_slots(
                step["verb"], step["object_names"], f"person {actor + 1}" if several else None
            )
            captions.append(Caption(end / config.fps, caption_text(slots), slots))
            if slots["verb"] in PUTS and "place" in slots:
                puts[-1] = (slots["place"], PUTS[slots["verb"]])
        if painter is not None and pause:  # the scene stands still, and no one acts in it
            still = painter.frame(
                moments[k + 1 : k + 2] * 2, keys.resting[k + 1 : k + 2] * 2, keys.people[k + 1]
            )
            frames[end + 1 : end + 1 + pause] = still
        else:
            frames[end + 1 : end + 1 + pause] = frames[end]
        start = end + 1 + pause
    questions = episode_questions(
        times,
        [m.holder for m in moments[1:]],
        [m.states for m in moments[1:]],
        puts,
        {obj: sim.node(obj).class_name.replace("_", " ") for obj in objects},
        len(sim.state.char_ids),
        str(episode["episode_id"]),
    )
    return Clip(episode["episode_id"], frames, float(config.fps), captions, questions)


# --- writing -----------------------------------------------------------------------------------------------

_CODECS = {"libx264": {"crf": "18", "preset": "medium"}, "mpeg4": {"qmax": "3"}}


@cache
def _codec() -> str:
    """The first video encoder of ``_CODECS`` the installed PyAV wheel has."""
    for name in _CODECS:
        try:
            av.codec.Codec(name, "w")
        except av.FFmpegError:
            continue
        return name
    raise E2WMError(f"this PyAV build has none of the video encoders {', '.join(_CODECS)}")


def _yuv420(image: np.ndarray) -> np.ndarray:
    """An RGB frame as BT.601 limited-range YUV 4:2:0 in PyAV's ``yuv420p`` layout ([H * 3 / 2, W]: the Y
    rows, then the U and V planes), in integer arithmetic (each 2x2 block's chroma from its summed colour)."""
    height, width = image.shape[:2]
    rgb = image.astype(np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    block = rgb.reshape(height // 2, 2, width // 2, 2, 3).sum(axis=(1, 3))  # 4x each block's mean colour
    r, g, b = block[..., 0], block[..., 1], block[..., 2]
    u = ((-38 * r - 74 * g + 112 * b + 512) >> 10) + 128
    v = ((112 * r - 94 * g - 18 * b + 512) >> 10) + 128
    planes = np.concatenate([y.ravel(), u.ravel(), v.ravel()])
    return planes.astype(np.uint8).reshape(height * 3 // 2, width)


def write_clip(clip: Clip, directory: str | Path, name: str) -> Path:
    """Write ``name.mp4`` (H.264, or MPEG-4 part 2 if that is all PyAV has) and ``name.json``.

    Both go to temporary names first; the JSON is renamed into place last, so a clip whose JSON exists
    is complete. Returns the video's path.
    """
    frames = clip.frames
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise E2WMError(
            f"clip {name}: frames must be uint8 [T, H, W, 3] with T > 0, got {frames.dtype} {frames.shape}"
        )
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise E2WMError(f"clip {name}: frame size {height}x{width} must be even (yuv420p video)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    video, captions = directory / f"{name}.mp4", directory / f"{name}.json"
    tmp_video = directory / f".tmp-{os.getpid()}-{name}.mp4"
    tmp_captions = directory / f".tmp-{os.getpid()}-{name}.json"
    codec = _codec()
    with av.open(str(tmp_video), "w") as container:
        stream = container.add_stream(
            codec, rate=Fraction(clip.fps).limit_denominator(1001), options=_CODECS[codec]
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # The bytes depend on the frames alone, so a resumed render writes what an uninterrupted one does:
        # one encoder thread, and the colour conversion done here rather than by FFmpeg's swscale
        # (a PyAV wheel's encode of the same frames was seen to differ by a few bytes between processes).
        stream.codec_context.thread_count = 1
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(_yuv420(image), format="yuv420p")))
        container.mux(stream.encode(None))
    fps = int(clip.fps) if float(clip.fps).is_integer() else clip.fps
    record = {"fps": fps, "frames": len(frames), "captions": [c.to_dict() for c in clip.captions]}
    if clip.questions:
        record["questions"] = [q.to_dict() for q in clip.questions]
    tmp_captions.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    os.replace(tmp_video, video)
    os.replace(tmp_captions, captions)
    return video


# --- a directory of rollouts -------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(config: RenderConfig, out: Path, graphs: dict[str, dict[str, Any]]) -> None:
    _WORKER.update(config=config, out=out, graphs=graphs)


def _render_one(episode: dict[str, Any]) -> Path:
    clip = render_episode(episode, _WORKER["config"], _WORKER["graphs"].get(episode["graph_id"]))
    return write_clip(clip, _WORKER["out"], clip.name)


@dataclass
class RenderRolloutsConfig:
    """``e2wm render``: which episodes, where their clips go, and how they look."""

    rollouts: str = field(metadata={"help": "directory of rollout shards from `e2wm collect`"})
    out: str = field(metadata={"help": "directory for the clips (finished clips are skipped)"})
    episodes: int | None = field(default=None, metadata={"help": "render only the first N episodes (by id)"})
    split: str | None = field(
        default=None, metadata={"help": "render only this split's episodes", "choices": SPLITS}
    )
    workers: int = field(default=1, metadata={"help": "worker processes"})
    scene_graph: str | None = field(default=None, metadata={"help": "scene graph JSON the episodes ran on"})
    look: RenderConfig = field(default_factory=RenderConfig)


def render_rollouts(
    rollouts_dir: str | Path,
    out_dir: str | Path,
    episodes: int | None = None,
    split: str | None = None,
    config: RenderConfig | None = None,
    workers: int = 1,
    progress: bool = False,
    scene_graph: str | Path | None = None,
) -> list[Path]:
    """Render the episodes of a directory of rollout shards to ``out_dir/EPISODE_ID.{mp4,json}``.

    ``split`` keeps one split's episodes; ``episodes`` the first N (by episode id) of those. Clips already
    written (their JSON exists) are skipped, so an interrupted run resumes. ``scene_graph``: the scene graph
    JSON episodes were collected on with ``e2wm collect --scene-graph`` (their graph id is its file stem).
    Returns every clip's video path.
    """
    config = config or RenderConfig()
    config.validate()
    if split is not None and split not in SPLITS:
        raise E2WMError(f"unknown split {split!r}: choose from {', '.join(SPLITS)}")
    if episodes is not None and episodes < 1:
        raise E2WMError(f"--episodes must be at least 1, got {episodes}")
    if workers < 1:
        raise E2WMError(f"--workers must be at least 1, got {workers}")
    graphs = {Path(scene_graph).stem: resources.load_json(scene_graph)} if scene_graph else {}
    rows = [e for e in load_episodes(str(rollouts_dir)) if split is None or e["split"] == split]
    if not rows:
        raise E2WMError(f"{rollouts_dir}: no episodes in split {split}")
    rows = rows[:episodes]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".tmp-*"):
        stale.unlink()
    todo = [e for e in rows if not (out / f"{e['episode_id']}.json").exists()]
    release()  # the input is checked: show what libraries said so far, and the progress from here on
    bar = tqdm(
        total=len(rows), initial=len(rows) - len(todo), desc="render", unit="episode", disable=not progress
    )
    _init_worker(config, out, graphs)
    if workers == 1 or len(todo) <= 1:
        for episode in todo:
            _render_one(episode)
            bar.update()
    else:
        context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        with context.Pool(min(workers, len(todo)), _init_worker, (config, out, graphs)) as pool:
            for _ in pool.imap_unordered(_render_one, todo):
                bar.update()
    bar.close()
    return [out / f"{e['episode_id']}.mp4" for e in rows]
