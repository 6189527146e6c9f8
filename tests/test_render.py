"""Rendering rollouts to top-down clips with timed narration, writing them, and reading them back."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pytest

from e2wm.cli import main
from e2wm.errors import E2WMError
from e2wm.multimodal.render import (
    TEMPLATES,
    RenderConfig,
    _yuv420,
    caption_slots,
    caption_text,
    parse_caption,
    render_episode,
    render_rollouts,
    write_clip,
)
from e2wm.multimodal.video_io import VideoCaptionDirectory, load_captions, load_video
from e2wm.rollouts.schema import SCHEMA
from e2wm.rollouts.shards import write_parquet
from e2wm.simulator.virtualhome import resources

CONFIG = RenderConfig(pause_rate=0.0)  # a fixed timeline: step k ends at frame lead_in + 8 (k + 1) - 1


def _mask(frame: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(frame == np.array(colour, np.uint8), axis=-1)


def _one_line_error(match: str, call, *args) -> str:
    with pytest.raises(E2WMError, match=match) as info:
        call(*args)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_replay_episode_renders_frames_and_timed_captions(drink: dict) -> None:
    clip = render_episode(drink, CONFIG)
    steps = drink["steps"]
    assert clip.name == drink["episode_id"] and clip.fps == 16
    assert clip.frames.dtype == np.uint8
    assert clip.frames.shape == (CONFIG.lead_in + len(steps) * CONFIG.frames_per_step, 64, 64, 3)
    successful = [k for k, s in enumerate(steps) if s["success"]]
    assert len(clip.captions) == len(successful) > 5
    times = [c.time for c in clip.captions]
    assert times == sorted(set(times)) and times[-1] < len(clip.frames) / clip.fps
    for k, caption in zip(successful, clip.captions, strict=True):
        last_frame = CONFIG.lead_in + (k + 1) * CONFIG.frames_per_step - 1
        assert caption.time == last_frame / CONFIG.fps
        assert caption.slots["verb"] == steps[k]["verb"].lower()
        assert parse_caption(caption.text) == caption.slots
    texts = [c.text for c in clip.captions]
    assert "walked to the dining room" in texts and "the cupboard is open now" in texts
    assert "grabbed the water glass" in texts


def test_pauses_hold_the_scene_still_between_steps_and_move_the_captions(drink: dict) -> None:
    plain = render_episode(drink, CONFIG)
    paused = render_episode(drink, RenderConfig(pause_rate=0.5, max_pause_steps=2))
    np.testing.assert_array_equal(paused.frames, render_episode(drink, RenderConfig(pause_rate=0.5)).frames)
    step = CONFIG.frames_per_step
    extra = len(paused.frames) - len(plain.frames)
    assert extra > 0 and extra % (step // 2) == 0  # pauses come in half steps
    assert [c.text for c in paused.captions] == [c.text for c in plain.captions]
    times = [round(c.time * CONFIG.fps) for c in paused.captions]
    gaps = {b - a for a, b in zip(times, times[1:], strict=False)}
    assert step in gaps and len(gaps) > 2 and any(g % step for g in gaps)  # no fixed rhythm or phase
    for p, q in zip(paused.captions, plain.captions, strict=True):  # each caption on the same picture
        np.testing.assert_array_equal(paused.frames[round(p.time * 16)], plain.frames[round(q.time * 16)])
    # Pause frames repeat the frame before them: the scene stands still.
    repeats = np.all(paused.frames[1:] == paused.frames[:-1], axis=(1, 2, 3)).sum()
    assert repeats >= extra + np.all(plain.frames[1:] == plain.frames[:-1], axis=(1, 2, 3)).sum()
    assert sum(p.time > q.time for p, q in zip(paused.captions, plain.captions, strict=True)) > 0
    _one_line_error("pause_rate must be in", render_episode, drink, RenderConfig(pause_rate=1.5))


def test_rendering_is_deterministic(drink: dict) -> None:
    first, second = render_episode(drink, CONFIG), render_episode(drink, CONFIG)
    np.testing.assert_array_equal(first.frames, second.frames)
    assert first.captions == second.captions


def test_frames_show_state_changes_and_smooth_motion(drink: dict) -> None:
    clip = render_episode(drink, CONFIG)
    k = next(i for i, s in enumerate(drink["steps"]) if s["verb"] == "OPEN")
    effect = (
        CONFIG.lead_in + k * CONFIG.frames_per_step + round(CONFIG.move_fraction * CONFIG.frames_per_step)
    )
    before, after = clip.frames[effect - 1], clip.frames[effect]
    assert _mask(after, CONFIG.open).sum() > _mask(before, CONFIG.open).sum()
    assert _mask(before, CONFIG.closed).sum() > _mask(after, CONFIG.closed).sum()
    # The first step walks to another room: the person's dot glides there over several frames.
    person = CONFIG.person_colours[0]
    centres = [np.argwhere(_mask(f, person)).mean(axis=0) for f in clip.frames[: CONFIG.lead_in + 8]]
    moves = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert np.linalg.norm(centres[-1] - centres[0]) > 10
    assert moves.max() < 0.6 * np.linalg.norm(centres[-1] - centres[0])
    assert (moves > 0.5).sum() >= 3


@pytest.mark.parametrize("size", [96, 128])
def test_other_sizes(drink: dict, size: int) -> None:
    clip = render_episode(drink, RenderConfig(size=size))
    assert clip.frames.shape[1:] == (size, size, 3)
    assert _mask(clip.frames[0], CONFIG.person_colours[0]).sum() > 0


def test_two_person_random_episode(pair: dict) -> None:
    clip = render_episode(pair, CONFIG)
    assert len(clip.frames) == CONFIG.lead_in + 12 * CONFIG.frames_per_step
    assert len(clip.captions) == sum(s["success"] for s in pair["steps"])
    for colour in CONFIG.person_colours[:2]:
        assert _mask(clip.frames[0], colour).any()
    actors = {c.slots["actor"] for c in clip.captions if "actor" in c.slots}
    assert actors <= {"person 1", "person 2"} and actors
    assert all(c.text.startswith(c.slots["actor"] + " ") for c in clip.captions if "actor" in c.slots)


def _boxed(program_id: str) -> dict:
    """A program's initial graph whose first room is four times as wide as the others."""
    graph = json.loads(json.dumps(resources.program_by_id(program_id).graphs()[0]))
    for x, node in enumerate(n for n in graph["nodes"] if n["category"] == "Rooms"):
        node["bounding_box"] = {"center": [x * 10.0, 0.0, 0.0], "size": [8.0 if x == 0 else 2.0, 3.0, 4.0]}
    return graph


def test_room_bounding_boxes_shape_the_floor_plan(drink: dict) -> None:
    frame = render_episode(drink, CONFIG, graph=_boxed("file628_2")).frames[0]
    areas = [_mask(frame, colour).sum() for colour in CONFIG.room_colours[:4]]
    assert areas[0] > 2.5 * max(areas[1:])
    grid = render_episode(drink, CONFIG).frames[0]
    grid_areas = [_mask(grid, colour).sum() for colour in CONFIG.room_colours[:4]]
    assert max(grid_areas) < 1.5 * min(grid_areas)


def test_rollouts_on_a_user_scene_graph(pair: dict, tmp_path) -> None:
    (tmp_path / "house.json").write_text(json.dumps(_boxed("file331_2")))
    episode = dict(pair, episode_id="random-house-000000", graph_id="house")
    rollouts = tmp_path / "rollouts"
    rollouts.mkdir()
    write_parquet(pa.Table.from_pylist([episode], schema=SCHEMA), rollouts / "x-00000-of-00001.parquet")
    _one_line_error("unknown scene graph 'house'", render_rollouts, rollouts, tmp_path / "a")
    [path] = render_rollouts(rollouts, tmp_path / "b", scene_graph=tmp_path / "house.json")
    clip = VideoCaptionDirectory(path.parent)[0]
    assert clip.name == "random-house-000000" and len(clip.captions) == sum(
        s["success"] for s in pair["steps"]
    )


def test_stale_rollouts_are_reported(drink: dict) -> None:
    broken = dict(drink, steps=[dict(s) for s in drink["steps"]])
    broken["steps"][1]["success"] = False
    _one_line_error("no longer fails", render_episode, broken, CONFIG)


def test_every_template_parses_back_to_its_slots() -> None:
    for verb, template in TEMPLATES.items():
        objects = ["water glass", "kitchen table"][: template.count("{")]
        for actor in (None, "person 2"):
            slots = caption_slots(verb.upper(), objects, actor)
            assert parse_caption(caption_text(slots)) == slots, verb
    assert parse_caption("The Fridge is open now.") == {"verb": "open", "object": "fridge", "state": "open"}
    assert parse_caption("danced the tango") is None


def test_write_then_load_round_trip(drink: dict, tmp_path) -> None:
    clip = render_episode(drink, CONFIG)
    path = write_clip(clip, tmp_path, clip.name)
    assert path == tmp_path / f"{clip.name}.mp4"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{clip.name}.json", f"{clip.name}.mp4"]
    record = json.loads((tmp_path / f"{clip.name}.json").read_text())
    assert record["fps"] == 16 and record["frames"] == len(clip.frames)
    loaded = VideoCaptionDirectory(tmp_path)
    assert len(loaded) == 1
    back = loaded[0]
    assert back.name == clip.name and back.fps == 16
    assert back.frames.shape == clip.frames.shape
    assert back.captions == clip.captions
    error = np.abs(back.frames.astype(np.int16) - clip.frames.astype(np.int16)).mean()
    assert error < 8, error
    half, fps = load_video(path, size=32, fps=8)
    assert half.shape == (len(clip.frames) // 2, 32, 32, 3) and fps == 8
    np.testing.assert_allclose(half[3], load_video(path, size=32)[0][6], atol=0)
    double, _ = load_video(path, fps=32)
    assert len(double) == 2 * len(clip.frames)
    np.testing.assert_array_equal(double[10], double[11])


def test_frames_are_converted_to_bt601_limited_range_yuv420() -> None:
    white, black, grey, red, blue = (255, 255, 255), (0, 0, 0), (128, 128, 128), (255, 0, 0), (0, 0, 255)
    top, bottom = [white, white, black, black], [grey, grey, red, blue]
    frame = np.array([top, top, bottom, bottom], np.uint8)
    yuv = _yuv420(frame)
    assert yuv.shape == (6, 4) and yuv.dtype == np.uint8
    y, u, v = yuv[:4], yuv[4:5].reshape(2, 2), yuv[5:6].reshape(2, 2)
    # Y = 16 + 219 * level / 255 in the integer form (grey 126.4 -> 126, red 81.5 -> 82); no chroma in greys
    assert y[0, 0] == 235 and y[0, 3] == 16 and y[2, 0] == 126 and y[2, 2] == 82
    assert u[0, 0] == u[0, 1] == u[1, 0] == v[0, 0] == v[0, 1] == v[1, 0] == 128
    # the red-blue block's chroma is that of its mean colour (127.5, 0, 127.5) by BT.601's real coefficients,
    # within the integer form's error: three coefficients rounded to 1/256 (3 * 255 * 0.5 / 256) plus a floor
    assert abs(int(u[1, 1]) - (128 + (-0.168736 * 127.5 + 0.5 * 127.5) * 224 / 255)) <= 1.5 + 1
    assert abs(int(v[1, 1]) - (128 + (0.5 * 127.5 - 0.081312 * 127.5) * 224 / 255)) <= 1.5 + 1


def test_loader_errors_are_one_line(drink: dict, tmp_path) -> None:
    _one_line_error("no videos", VideoCaptionDirectory, tmp_path)
    clip = render_episode(dict(drink, steps=drink["steps"][:2]), CONFIG)
    write_clip(clip, tmp_path, "a")
    (tmp_path / "a.json").write_text('{"captions": [')
    message = _one_line_error("not valid JSON", VideoCaptionDirectory, tmp_path)
    assert "a.json" in message
    (tmp_path / "a.json").unlink()
    assert "a.mp4" in _one_line_error("no caption file", VideoCaptionDirectory, tmp_path)
    bad = {
        "not sorted": [{"time": 2.0, "text": "x"}, {"time": 1.0, "text": "y"}],
        "non-negative": [{"time": -1.0, "text": "x"}],
        "non-empty": [{"time": 1.0, "text": "  "}],
    }
    for match, captions in bad.items():
        (tmp_path / "a.json").write_text(json.dumps({"captions": captions}))
        _one_line_error(match, load_captions, tmp_path / "a.json")
    (tmp_path / "a.json").write_text(json.dumps({"captions": [{"time": 60.0, "text": "late"}]}))
    _one_line_error("past the video's end", VideoCaptionDirectory(tmp_path).__getitem__, 0)
    (tmp_path / "b.mp4").write_bytes(b"not a video")
    (tmp_path / "b.json").write_text('{"captions": []}')
    _one_line_error("cannot decode", VideoCaptionDirectory(tmp_path).__getitem__, 1)


def test_render_rollouts_resumes_and_cli(drink: dict, pair: dict, tmp_path, capsys) -> None:
    rollouts, out = tmp_path / "rollouts", tmp_path / "clips"
    rollouts.mkdir()
    write_parquet(pa.Table.from_pylist([drink, pair], schema=SCHEMA), rollouts / "x-00000-of-00001.parquet")
    first = render_rollouts(rollouts, out, episodes=1, config=CONFIG)
    assert first == [out / f"{pair['episode_id']}.mp4"]  # sorted by id: random- before replay-
    stamp = os.stat(out / f"{pair['episode_id']}.json").st_mtime_ns
    main(["render", "--rollouts", str(rollouts), "--out", str(out), "--quiet"])
    assert "2 clip(s)" in capsys.readouterr().out
    assert os.stat(out / f"{pair['episode_id']}.json").st_mtime_ns == stamp
    assert [c.name for c in VideoCaptionDirectory(out)] == sorted([drink["episode_id"], pair["episode_id"]])
    empty = next(s for s in ("validation", "test_seen", "test_unseen") if s != drink["split"])
    _one_line_error("no episodes in split", render_rollouts, rollouts, out, None, empty)
    with pytest.raises(SystemExit) as exit_info:
        main(["render", "--rollouts", str(tmp_path / "none"), "--out", str(out), "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no rollout shards" in err
