"""The sprites look of rendered episodes (a shape, pattern and colour per class) and other layouts."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from e2wm.agents.replay import replay
from e2wm.cli import main
from e2wm.errors import E2WMError
from e2wm.multimodal.render import RenderConfig, render_episode
from e2wm.multimodal.sprites import HIGHLIGHT, SHAPES, identity, tile_of
from e2wm.multimodal.video_io import VideoCaptionDirectory
from e2wm.rollouts.schema import SCHEMA
from e2wm.rollouts.shards import write_parquet
from e2wm.simulator.virtualhome import resources
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator

SPRITES = RenderConfig(pause_rate=0.0, style="sprites")  # step k's frames: lead_in + 8 k to lead_in + 8 k + 7
STEP = SPRITES.frames_per_step
MOVING = round(SPRITES.move_fraction * STEP)  # the first frame of a step's effect
# Share of a sprite's pixels that must show where a neighbour or a person may cover a corner of it: about a
# ninth may hide (a 3 x 3 corner of an 11 x 11 tile, or of a bar's 55), while a closed tile over an open one
# or a tile shifted by a pixel misses its outline on two sides, over a third of a bar's pixels.
SHARE = 0.85


def _spots(
    frame: np.ndarray, tile: np.ndarray, mask: np.ndarray, share: float = 1.0
) -> list[tuple[int, int]]:
    """The centres (x, y) where ``frame`` shows at least ``share`` of the opaque pixels of ``tile`` (below 1:
    a neighbour or a person may hide a corner), the best of those less than half a tile apart."""
    n = len(tile)
    windows = np.lib.stride_tricks.sliding_window_view(frame, (n, n, 3))[:, :, 0]
    score = np.all(windows[:, :, mask] == tile[mask], axis=-1).mean(axis=-1)
    found: list[tuple[int, int]] = []
    for y, x in sorted(zip(*np.nonzero(score >= share), strict=True), key=lambda p: -score[p]):
        if all(max(abs(x - fx), abs(y - fy)) > n // 2 for fx, fy in found):
            found.append((int(x), int(y)))
    return sorted((x + n // 2, y + n // 2) for x, y in found)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def _class_shaped(shape: str) -> str:
    return next(n for n in (f"class{i}" for i in itertools.count()) if identity(n)[0] == shape)


def _one_line_error(match: str, call, *args) -> None:
    with pytest.raises(E2WMError, match=match) as info:
        call(*args)
    assert "\n" not in str(info.value)


def test_classes_differ_in_shape_and_keep_their_look(drink: dict) -> None:
    frames = render_episode(drink, SPRITES).frames
    cupboard, glass = tile_of(SPRITES, "cupboard", {"CLOSED"}), tile_of(SPRITES, "water_glass", ())
    assert len(_spots(frames[0], *cupboard)) == 1 and len(_spots(frames[0], *glass)) == 1
    # Different classes, different shapes: each binarised sprite overlaps the other's by well under half.
    a, b = (tile_of(SPRITES, _class_shaped(s), ())[1] for s in ("triangle", "bar"))
    assert _iou(a, b) < 0.5
    masks = [tile_of(SPRITES, _class_shaped(s), ())[1] for s in SHAPES]
    assert all(_iou(p, q) < 0.95 for p, q in itertools.combinations(masks, 2))
    # A class looks the same in another episode (another program on the scene, other steps and timing) ...
    other = replay(VirtualHomeSimulator(), resources.program_by_id("file286_2"), seed=0)
    again = render_episode(other, RenderConfig(style="sprites")).frames[0]
    assert len(_spots(again, *cupboard)) == 1 and len(_spots(again, *glass)) == 1
    # ... and in another process, whatever Python's string hash seed.
    code = "from e2wm.multimodal.sprites import identity; print(identity('cupboard'))"
    env = dict(os.environ, PYTHONHASHSEED="12345")
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == str(identity("cupboard"))


def test_two_objects_of_a_class_look_alike(pair: dict) -> None:
    frame = render_episode(pair, SPRITES).frames[0]
    # A closed and an open curtain differ in the outline and the mark: more than 1 - SHARE of the pixels.
    assert len(_spots(frame, *tile_of(SPRITES, "curtain", {"CLOSED"}), SHARE)) == 2  # curtains 408, 409
    assert len(_spots(frame, *tile_of(SPRITES, "curtain", {"OPEN"}), SHARE)) == 1  # curtain 407


def test_state_changes_keep_the_class_shape(drink: dict) -> None:
    side = SPRITES.sprite
    others = [tile_of(SPRITES, _class_shaped(s), ())[1] for s in SHAPES if s != identity("cupboard")[0]]
    for first, second in ((("CLOSED",), ("OPEN",)), ((), ("ON",)), (("OFF",), ("ON",)), ((), ("OPEN", "ON"))):
        (tile_a, mask_a), (tile_b, mask_b) = (tile_of(SPRITES, "cupboard", s) for s in (first, second))
        assert np.any(tile_a != tile_b), (first, second)
        # A state recolours the outline and adds at most two corner marks of a third of the side each.
        union = (mask_a | mask_b).sum()
        assert _iou(mask_a, mask_b) >= 1 - 2 * (side // 3) ** 2 / union
        assert _iou(mask_a, mask_b) > max(_iou(mask_b, m) for m in others)  # still nearest its own shape
    # In the clip, the cupboard's sprite turns from closed to open on the OPEN step's effect frame.
    frames = render_episode(drink, SPRITES).frames
    k = next(i for i, s in enumerate(drink["steps"]) if s["verb"] == "OPEN")
    effect = SPRITES.lead_in + k * STEP + MOVING
    closed, opened = tile_of(SPRITES, "cupboard", {"CLOSED"}), tile_of(SPRITES, "cupboard", {"OPEN"})
    assert _spots(frames[effect - 1], *closed) and not _spots(frames[effect - 1], *opened)
    assert _spots(frames[effect], *opened) == _spots(frames[effect - 1], *closed)


def test_the_acting_person_is_highlighted_only_during_its_step(pair: dict) -> None:
    frames = render_episode(pair, SPRITES).frames
    lit = np.all(frames == np.array(HIGHLIGHT, np.uint8), axis=-1)
    assert not lit[: SPRITES.lead_in].any()
    for k, step in enumerate(pair["steps"]):
        span = lit[SPRITES.lead_in + k * STEP : SPRITES.lead_in + (k + 1) * STEP]
        assert span.any(axis=(1, 2)).all() == step["success"] == span.any(), k
        # The ring is round the actor: its centroid lies within the ring's radius of the actor's dot (exact
        # colour), on the step's first frame, before the pointer; held objects may cover part of it.
        first = frames[SPRITES.lead_in + k * STEP]
        dots = [
            np.argwhere(np.all(first == np.array(c, np.uint8), axis=-1)) for c in SPRITES.person_colours[:2]
        ]
        ring = np.argwhere(span[0]).mean(axis=0)
        distances = [np.linalg.norm(d.mean(axis=0) - ring) if len(d) else np.inf for d in dots]
        assert int(np.argmin(distances)) == step["actor"] and distances[step["actor"]] < SPRITES.radius + 2, k
    # With pauses, the still frames after a step show no one acting.
    paused = render_episode(pair, RenderConfig(style="sprites", pause_rate=0.5)).frames
    assert len(paused) > len(frames)
    lit_frames = np.all(paused == np.array(HIGHLIGHT, np.uint8), axis=-1).any(axis=(1, 2)).sum()
    assert lit_frames == STEP * sum(s["success"] for s in pair["steps"])


def test_put_objects_glide_to_where_they_land(pair: dict) -> None:
    frames = render_episode(pair, SPRITES).frames
    for verb, name in (("PUTIN", "clothes_skirt"), ("PUTBACK", "mat")):
        k = next(i for i, s in enumerate(pair["steps"]) if s["verb"] == verb)
        tile = tile_of(SPRITES, name, ())
        start = SPRITES.lead_in + k * STEP
        path = [_spots(frames[start + i], *tile) for i in range(MOVING - 1, STEP)]
        assert all(len(spots) == 1 for spots in path), (verb, path)
        path = np.array([spots[0] for spots in path], float)
        total = np.linalg.norm(path[-1] - path[0])
        hops = np.linalg.norm(np.diff(path, axis=0), axis=1)
        assert total >= 3, verb  # from the hand to the landing spot: a way to go, not a jump
        assert (hops > 0).sum() >= 2 and hops.max() < total, (verb, path)
        towards = np.linalg.norm(path - path[-1], axis=1)
        assert np.all(np.diff(towards) <= 0.5), (verb, path)  # closer every frame (to rounding)
        later = frames[start + STEP : start + 2 * STEP]
        for frame in later:  # it stays where it landed (unless someone takes it again)
            assert _spots(frame, *tile) in ([tuple(path[-1].astype(int))], [])


def test_layout_seed_moves_objects_and_the_default_stays_put(drink: dict) -> None:
    names = {"cupboard": {"CLOSED"}, "water_glass": (), "water": ()}

    def where(config: RenderConfig) -> list[list[tuple[int, int]]]:
        frame = render_episode(drink, config).frames[0]
        return [_spots(frame, *tile_of(config, n, s), SHARE) for n, s in names.items()]

    default = where(SPRITES)
    assert all(len(spots) == 1 for spots in default)
    assert where(RenderConfig(pause_rate=0.0, style="sprites", layout_seed=None)) == default
    for seed in (1, 2, 3):
        moved = where(RenderConfig(pause_rate=0.0, style="sprites", layout_seed=seed))
        # The lead-in's person, at its room's centre, may stand on one of them.
        assert sum(len(spots) == 1 for spots in moved) >= 2, seed
        assert all(spots != here for spots, here in zip(moved, default, strict=True)), seed
        assert moved == where(RenderConfig(pause_rate=0.0, style="sprites", layout_seed=seed))
    # Rooms without bounding boxes are shuffled on the grid: the floor plan differs too.
    plans = [render_episode(drink, RenderConfig(layout_seed=s)).frames[0] for s in (None, 1, 2, 3)]
    floors = [np.all(p == np.array(SPRITES.room_colours[0], np.uint8), axis=-1) for p in plans]
    assert any(not np.array_equal(floors[0], f) for f in floors[1:])


def test_layout_per_episode_places_each_episode_by_its_own_id(drink: dict) -> None:
    names = {"cupboard": {"CLOSED"}, "water_glass": (), "water": ()}
    per_episode = RenderConfig(pause_rate=0.0, style="sprites", layout_per_episode=True)

    def where(episode: dict, config: RenderConfig) -> list[list[tuple[int, int]]]:
        frame = render_episode(episode, config).frames[0]
        return [_spots(frame, *tile_of(config, n, s), SHARE) for n, s in names.items()]

    ids = ("a", "b", "c")
    plain = [where({**drink, "episode_id": i}, SPRITES) for i in ids]
    assert plain[1:] == plain[:-1]  # without it the id moves nothing
    placed = [where({**drink, "episode_id": i}, per_episode) for i in ids]
    assert placed[0] == where({**drink, "episode_id": "a"}, per_episode)  # an id always gets its layout
    for spots in placed:  # the lead-in's person, at its room's centre, may stand on one of them
        assert sum(len(s) == 1 for s in spots) >= 2, spots
    assert all(a != b for a, b in itertools.combinations(placed, 2)), placed
    assert all(spots != plain[0] for spots in placed)


def test_style_flags_and_unknown_style(drink: dict, tmp_path, capsys) -> None:
    _one_line_error("unknown style 'cartoon'", render_episode, drink, RenderConfig(style="cartoon"))
    rollouts, out = tmp_path / "rollouts", tmp_path / "clips"
    rollouts.mkdir()
    write_parquet(pa.Table.from_pylist([drink], schema=SCHEMA), rollouts / "x-00000-of-00001.parquet")
    base = ["render", "--rollouts", str(rollouts), "--out", str(out), "--quiet"]
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--style", "cartoon"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--style" in err and "invalid choice: 'cartoon'" in err
    main([*base, "--style", "sprites", "--layout-seed", "3"])
    [clip] = [VideoCaptionDirectory(out)[0]]
    expected = render_episode(drink, RenderConfig(style="sprites", layout_seed=3)).frames
    assert clip.frames.shape == expected.shape
    error = np.abs(clip.frames.astype(np.int16) - expected.astype(np.int16)).mean()
    assert error < 8, error  # the same frames, through H.264 at CRF 18 (as tests/test_render.py's round trip)
    other = render_episode(drink, RenderConfig(layout_seed=3)).frames
    assert np.abs(clip.frames.astype(np.int16) - other.astype(np.int16)).mean() > error
