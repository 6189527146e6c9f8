"""The ``sprites`` look of rendered episodes: each object class has its own shape, pattern and colour.

A class's look comes from ``zlib.crc32`` of its name (not Python's salted ``hash``), so a class looks the
same in every episode, split and process. States keep the class's look: they colour a one-pixel outline
around the shape (dark when the object has none) and put a small mark in a corner of the tile: top right
for open/closed, top left for on/off. People are dots of their own colour with a light border; the person
acting in a step wears a ring (``HIGHLIGHT``) for the step's frames and, once there, a short pointer out of
it towards what it acts on. Objects that change hands or places glide over the step's last frames instead
of jumping.

Sprites are drawn once per (class, states, size) with cv2 at 8x and scaled down, then cached and pasted.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Protocol

import cv2
import numpy as np

RGB = tuple[int, int, int]

SHAPES = ("square", "circle", "triangle", "diamond", "plus", "cross", "bar", "tee")
PATTERNS = ("solid", "striped", "dotted", "hollow")
OUTLINE: RGB = (24, 24, 28)  # the outline of an object with no state: dark on every floor colour
HIGHLIGHT: RGB = (255, 255, 255)  # the acting person's ring; no sprite, floor or person has this colour
BORDER: RGB = (235, 235, 235)  # every person's border: tells a person from a round sprite of its colour
_SUPER = 8  # shapes are drawn this many times larger, then averaged down: even edges at any size
_MARKS = {"OPEN": 1, "CLOSED": 1, "ON": 0, "OFF": 0}  # state -> corner: 0 top left, 1 top right
# OpenCV hues (0-179) of the default state colours, closed (brown), on (yellow) and open (green), and
# within 10 of them: no class takes these, so a state's outline and mark stand out on every sprite.
_HUES = tuple(h for h in range(180) if min(abs(h - s) % 180 for s in (13, 27, 70)) > 10)

Point = tuple[float, float]


class Look(Protocol):
    """What of ``render.RenderConfig`` sprites use (a protocol: render imports this module)."""

    @property
    def size(self) -> int: ...
    @property
    def radius(self) -> float: ...
    @property
    def marker(self) -> int: ...
    @property
    def sprite(self) -> int: ...
    @property
    def person_colours(self) -> tuple[RGB, ...]: ...
    def state_colour(self, states: frozenset[str]) -> RGB: ...


class Moment(Protocol):
    """Who holds which object, and each object's states (``render._Moment``)."""

    holder: dict[int, int]
    states: dict[int, frozenset[str]]


def identity(class_name: str) -> tuple[str, str, RGB]:
    """A class's shape, pattern and colour, from a stable hash of its name."""
    h = zlib.crc32(class_name.encode())
    hue, value = _HUES[(h >> 5) % len(_HUES)], 140 + (h >> 13) % 4 * 30  # saturated, not white nor black
    colour = cv2.cvtColor(np.array([[[hue, 230, value]]], np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    return SHAPES[h % len(SHAPES)], PATTERNS[(h >> 3) % len(PATTERNS)], tuple(int(c) for c in colour)


@cache
def shape_mask(shape: str, side: int) -> np.ndarray:
    """A ``side`` x ``side`` boolean mask of ``shape``."""
    n = side * _SUPER
    big = np.zeros((n, n), np.uint8)
    third, mid = n // 3, n // 2
    polygons = {
        "triangle": [(0, n - 1), (n - 1, n - 1), (mid, 0)],
        "diamond": [(mid, 0), (n - 1, mid), (mid, n - 1), (0, mid)],
    }
    if shape == "square":
        big[:] = 1
    elif shape == "circle":
        y, x = np.mgrid[:n, :n] - (n - 1) / 2
        big[x * x + y * y <= mid * mid] = 1
    elif shape in polygons:
        cv2.fillPoly(big, [np.array(polygons[shape], np.int32)], 1)
    elif shape == "plus":
        big[third : n - third] = big[:, third : n - third] = 1
    elif shape == "cross":
        cv2.line(big, (0, 0), (n - 1, n - 1), 1, n // 5)
        cv2.line(big, (0, n - 1), (n - 1, 0), 1, n // 5)
    elif shape == "bar":
        big[mid - n // 5 : mid + n // 5] = 1
    elif shape == "tee":
        big[:third] = big[:, third : n - third] = 1
    else:
        raise ValueError(f"unknown shape {shape!r}")
    small = cv2.resize(big.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA)
    return small >= 0.5


def _pattern(pattern: str, mask: np.ndarray, colour: RGB) -> tuple[np.ndarray, np.ndarray]:
    """The shape's pixels in ``pattern`` and which pixels they are."""
    side = len(mask)
    y, x = np.mgrid[:side, :side]
    tile = np.empty((side, side, 3), np.uint8)
    tile[:] = colour
    dark = (np.array(colour) * 0.4).astype(np.uint8)
    if pattern == "striped":  # diagonal: told apart from a bar, whose edges run straight
        tile[((x + y) // 2) % 2 == 1] = dark
    elif pattern == "dotted":
        tile[(x % 3 == 1) & (y % 3 == 1)] = dark
    elif pattern == "hollow":  # the outer ring only, the floor showing through
        thickness = max(1, round(side / 8))
        mask = mask & ~cv2.erode(
            mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=thickness
        ).astype(bool)
    return tile, mask


@cache
def sprite(
    class_name: str, states: frozenset[str], side: int, colours: tuple[tuple[str, RGB], ...]
) -> tuple[np.ndarray, np.ndarray]:
    """The RGB tile of a class in ``states`` and its opaque pixels, ``side + 2`` pixels square.

    ``colours``: (state, colour) in order of precedence for the outline; the marks use each state's own.
    """
    shape, pattern, colour = identity(class_name)
    body, opaque = _pattern(pattern, shape_mask(shape, side), colour)
    full = np.pad(shape_mask(shape, side), 1)
    tile = np.zeros((side + 2, side + 2, 3), np.uint8)
    tile[1:-1, 1:-1] = body
    mask = np.pad(opaque, 1)
    ring = cv2.dilate(full.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~full
    shown = [(s, c) for s, c in colours if s in states]
    tile[ring] = shown[0][1] if shown else OUTLINE
    mask |= ring
    mark = max(2, side // 3)
    for state, state_colour in shown:
        corner = _MARKS[state] * (side + 2 - mark)
        tile[:mark, corner : corner + mark] = state_colour
        mask[:mark, corner : corner + mark] = True
    tile.flags.writeable = mask.flags.writeable = False  # shared by every frame through the cache
    return tile, mask


def tile_of(config: Look, class_name: str, states: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """A class's sprite (tile, opaque pixels) in ``states`` (only on, off, open and closed show)."""
    colours = tuple((s, config.state_colour(frozenset({s}))) for s in ("ON", "OPEN", "OFF", "CLOSED"))
    return sprite(class_name, frozenset(states).intersection(_MARKS), config.sprite, colours)


def blit(image: np.ndarray, tile: np.ndarray, mask: np.ndarray, at: Point) -> None:
    """Paste the opaque pixels of ``tile`` centred on ``at``, clipped to the image."""
    half = len(tile) // 2
    x0, y0 = round(at[0]) - half, round(at[1]) - half
    left, top = max(x0, 0), max(y0, 0)
    right, bottom = min(x0 + len(tile), image.shape[1]), min(y0 + len(tile), image.shape[0])
    if left >= right or top >= bottom:
        return
    cut = (slice(top - y0, bottom - y0), slice(left - x0, right - x0))
    region = image[top:bottom, left:right]
    region[mask[cut]] = tile[cut][mask[cut]]


def _lerp(a: Point, b: Point, t: float) -> Point:
    return a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t


class Painter:
    """Draws the frames of one episode in the sprites look over its floor plan."""

    def __init__(self, floor: np.ndarray, config: Look, classes: Mapping[int, str]):
        self.floor, self.config, self.classes = floor, config, classes
        reach = config.radius + 1 + config.marker  # a held tile clear of its holder's dot and border
        self.hands = ((reach, -reach), (-reach, -reach), (reach, reach), (-reach, reach))

    def placed(self, moment: Moment, resting: Mapping[int, Point], people: list[Point]) -> dict[int, Point]:
        """Where each object is: in its holder's hands (in ``render._draw``'s order) or where it rests.

        A hand off the frame is mirrored to the holder's other side: kept in, the sprite would cover it.
        """
        low, high = self.config.marker, self.config.size - 1 - self.config.marker
        spots, held = {}, {}
        for obj in self.classes:
            if obj in moment.holder:
                k = moment.holder[obj]
                dx, dy = self.hands[held.setdefault(k, 0) % len(self.hands)]
                held[k] += 1
                x, y = people[k]
                dx = dx if low <= x + dx <= high else -dx
                dy = dy if low <= y + dy <= high else -dy
                spots[obj] = x + dx, y + dy
            else:
                spots[obj] = resting[obj]
        return spots

    def frame(
        self,
        moments: Sequence[Moment],
        resting: Sequence[Mapping[int, Point]],
        people: list[Point],
        landing: float = 0.0,
        act: tuple[int, Point | None, bool] | None = None,
    ) -> np.ndarray:
        """A frame ``landing`` of the way (0 to 1) from the places of the first of two moments (and the
        resting spots before it) to the second's; objects show the second moment's states.

        ``act``: the acting person, the spot it acts on (None: a room) and whether it reaches for it yet.
        """
        start, end = self.placed(moments[0], resting[0], people), self.placed(moments[1], resting[1], people)
        now = moments[1]
        low, high = self.config.marker, self.config.size - 1 - self.config.marker  # whole sprites only
        spots = {
            obj: tuple(min(max(v, low), high) for v in _lerp(start[obj], end[obj], landing))
            for obj in self.classes
        }
        moving = {obj for obj in self.classes if obj in now.holder or start[obj] != end[obj]}
        image = self.floor.copy()
        self._objects(image, (o for o in self.classes if o not in moving), now, spots)
        self._people(image, people, act)
        self._objects(image, (o for o in self.classes if o in moving), now, spots)
        return image

    def _objects(
        self, image: np.ndarray, objects: Iterable[int], now: Moment, spots: dict[int, Point]
    ) -> None:
        for obj in objects:
            blit(image, *tile_of(self.config, self.classes[obj], now.states[obj]), spots[obj])

    def _people(
        self, image: np.ndarray, people: list[Point], act: tuple[int, Point | None, bool] | None
    ) -> None:
        config, scale = self.config, 16  # cv2 draws at 1/16 pixel with shift=4: smooth motion
        radius = round(config.radius * scale)
        for k, (x, y) in enumerate(people):
            colour = config.person_colours[k % len(config.person_colours)]
            centre = round(x * scale), round(y * scale)
            if act is not None and act[0] == k:
                # No anti-aliasing: the ring's pixels are exactly HIGHLIGHT, which nothing else draws.
                cv2.circle(image, centre, radius + 2 * scale, HIGHLIGHT, 1, cv2.LINE_8, 4)
                if act[1] is not None and act[2]:  # a pointer out of the ring: which neighbour it acts on
                    gap = max(math.dist((x, y), act[1]), 1e-6)
                    ends = [_lerp((x, y), act[1], min(1.0, (config.radius + d) / gap)) for d in (2, 4)]
                    pointer = [(round(u * scale), round(v * scale)) for u, v in ends]
                    cv2.line(image, *pointer, HIGHLIGHT, 1, cv2.LINE_8, 4)
            cv2.circle(image, centre, radius + scale, BORDER, -1, cv2.LINE_AA, 4)
            cv2.circle(image, centre, radius, colour, -1, cv2.LINE_AA, 4)
