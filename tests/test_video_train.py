"""The 3-stage video training recipe on a tiny LM and two rendered clips; windows, labels; `e2wm stream`."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml
from safetensors.torch import load_file
from support.jobs import kill_midway
from support.tiny_lm import TINY_ENCODER, save_tiny_lm
from transformers import AutoProcessor

from e2wm.agents.explore import ExploreConfig, explore_episode
from e2wm.cli import main
from e2wm.errors import E2WMError
from e2wm.multimodal import E2WMVideoForCausalLM, VideoEncoder, VideoEncoderConfig
from e2wm.multimodal import data as video_data
from e2wm.multimodal.data import (
    EVENT_CLASSES,
    IGNORE,
    OTHER,
    EventWindows,
    clip_windows,
    event_labels,
    slot_labels,
    slot_vocabulary,
)
from e2wm.multimodal.pretraining import covariance_term, variance_term
from e2wm.multimodal.probe import probe_accuracy
from e2wm.multimodal.questions import answer_matches
from e2wm.multimodal.render import RenderConfig, render_episode, write_clip
from e2wm.multimodal.video_io import Caption, Clip, VideoCaptionDirectory
from e2wm.rollouts.schema import SCHEMA
from e2wm.rollouts.shards import write_parquet
from e2wm.simulator.virtualhome import resources
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator
from e2wm.training import train_video
from e2wm.training.recipe import RECIPE_NAME, read_recipe

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("video_*.yaml"))
ENCODER = [
    "--image_size", "32", "--stem_channels", "8", "--stage_channels", "8", "16", "16", "24",
    "--head_channels", "32", "--encoder_hidden_size", "24",
]  # fmt: skip
pytestmark = pytest.mark.usefixtures("one_thread")
TRAINING = [
    "--window_frames", "32", "--max_steps", "2", "--per_device_train_batch_size", "2",
    "--learning_rate", "1e-2", "--use_cpu", "true", "--bf16", "false", "--report_to", "none",
    "--save_strategy", "no", "--logging_steps", "1", "--seed", "0", "--activation_checkpointing", "false",
]  # fmt: skip


@pytest.fixture(scope="module")
def clips(tmp_path_factory, drink: dict) -> Path:
    """Two rendered clips at 32x32: the replay of 'Drink' and a short random episode."""
    folder = tmp_path_factory.mktemp("clips")
    program = resources.program_by_id("file331_2")
    wander = explore_episode(
        VirtualHomeSimulator(),
        program.graphs()[0],
        program.id,
        "train",
        ExploreConfig(length=4, people=1),
        seed=3,
        episode_id="random-test-000000",
    )
    for episode in (drink, wander):
        clip = render_episode(episode, RenderConfig(size=32))
        write_clip(clip, folder, clip.name)
    return folder


@pytest.fixture(scope="module")
def stages(tmp_path_factory, clips) -> dict:
    """The three stages run in order, each from the previous one's output (and the logs of stages 1-2)."""
    root = tmp_path_factory.mktemp("stages")
    lm = save_tiny_lm(root / "lm")
    out = {"lm": lm, "1": root / "stage1", "2": root / "stage2", "3": root / "stage3"}
    data = ["--clips", str(clips)]
    evaluated = ["--eval_clips", str(clips), "--eval_strategy", "steps", "--eval_steps", "2"]
    stage1 = ["--stage", "1", *data, *evaluated, *ENCODER, *TRAINING, "--output_dir", str(out["1"])]
    out["log1"] = train_video.train(*train_video.parse(stage1)).state.log_history
    stage2 = [
        "--stage",
        "2",
        "--init_from",
        str(out["1"]),
        "--model_name_or_path",
        str(lm),
        "--tokens_per_step",
        "2",
    ]
    stage2 += [*data, *evaluated, *TRAINING, "--output_dir", str(out["2"])]
    out["log2"] = train_video.train(*train_video.parse(stage2)).state.log_history
    lora = [
        "--use_peft",
        "true",
        "--lora_r",
        "4",
        "--lora_alpha",
        "8",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
    ]
    stage3 = ["--stage", "3", "--init_from", str(out["2"]), *lora, "--decision_loss_weight", "3.0"]
    stage3 += ["--questions_per_window", "4"]
    train_video.main([*stage3, *data, *TRAINING, "--output_dir", str(out["3"])])
    return out


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_video_recipe_parses_and_names_its_launch_command(recipe: Path) -> None:
    first = recipe.read_text().splitlines()[0]
    assert first == (
        "# accelerate launch --config_file accelerate_configs/cpu.yaml -m e2wm.training.train_video "
        f"--config recipes/{recipe.name}"
    )
    keys = yaml.safe_load(recipe.read_text())
    script, training, model_args = train_video.parse(["--config", str(recipe)])
    assert script.stage == keys["stage"] and training.output_dir == keys["output_dir"]
    assert script.window_frames % 4 == 0 and not training.bf16 and training.use_cpu
    if script.stage > 1:  # each stage starts from the one before
        previous = next(r for r in RECIPES if f"stage{script.stage - 1}" in r.name)
        assert script.init_from == yaml.safe_load(previous.read_text())["output_dir"]
    assert model_args.use_peft == (script.stage == 3)


def test_one_recipe_per_stage_and_stage_0_names_how_stage_1_starts_from_it() -> None:
    assert sorted(yaml.safe_load(r.read_text())["stage"] for r in RECIPES) == [0, 1, 2, 3]
    stage0 = next(r for r in RECIPES if "stage0" in r.name)
    assert f"--init_from {yaml.safe_load(stage0.read_text())['output_dir']}`" in stage0.read_text()


def test_the_anti_collapse_terms() -> None:
    constant = torch.ones(5, 3)
    assert variance_term(constant).item() == pytest.approx(1 - 1e-2, abs=1e-6)  # std sqrt(0 + 1e-4)
    x = torch.tensor([1.0, -1.0, 1.0, -1.0])
    # two equal dimensions of variance 4/3: off-diagonal covariances 4/3 twice, squared, per dimension
    assert covariance_term(torch.stack([x, x], dim=1)).item() == pytest.approx(16 / 9, rel=1e-6)
    assert covariance_term(torch.stack([x, torch.tensor([1.0, 1.0, -1.0, -1.0])], dim=1)).item() == 0.0


def test_stage_0_pretrains_the_encoder_that_stage_1_starts_from(clips: Path, tmp_path: Path) -> None:
    data = ["--clips", str(clips), *ENCODER, *TRAINING]
    stage0 = train_video.train(
        *train_video.parse(["--stage", "0", *data, "--output_dir", str(tmp_path / "0")])
    )
    losses = [h["loss"] for h in stage0.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(np.isfinite(losses))
    pretrained = VideoEncoder.from_pretrained(tmp_path / "0", use_safetensors=True)
    assert "labels" not in stage0.train_dataset[0]  # stage 0 never sees a caption
    # stage 1 from it, at learning rate 0: its encoder is stage 0's, trained on half the windows
    argv = ["--stage", "1", *data, "--init_from", str(tmp_path / "0"), "--label_fraction", "0.5"]
    stage1 = train_video.train(
        *train_video.parse([*argv, "--learning_rate", "0", "--output_dir", str(tmp_path / "1")])
    )
    n = len(EventWindows(VideoCaptionDirectory(clips, 32, 16.0), 32, None, 32))
    assert len(stage1.train_dataset) == round(n / 2)
    encoder = VideoEncoder.from_pretrained(tmp_path / "1", use_safetensors=True)
    assert all(torch.equal(v, pretrained.state_dict()[k]) for k, v in encoder.state_dict().items())


def _clip(frames: int, times: list[float], fps: float = 16.0) -> Clip:
    video = np.arange(frames, dtype=np.uint8)[:, None, None, None].repeat(4, 1).repeat(4, 2).repeat(3, 3)
    return Clip(
        "c", video, fps, [Caption(t, f"grabbed the mug {i}", {"verb": "grab"}) for i, t in enumerate(times)]
    )


def test_windows_retime_captions_and_cover_the_clip() -> None:
    clip = _clip(40, [0.9375, 1.4375, 2.4])  # frames 15, 23, 38
    windows = clip_windows(clip, 16)
    assert [w.name for w in windows] == ["c@0", "c@16", "c@24"]  # the last one ends at the clip's end
    assert all(len(w.frames) == 16 for w in windows)
    assert windows[2].frames[0, 0, 0, 0] == 24 and windows[2].frames[-1, 0, 0, 0] == 39
    assert [[c.text[-1] for c in w.captions] for w in windows] == [["0"], ["1"], ["2"]]
    # timed from the window's start, in the middle of their frame: frame 23 is frame 7 of c@16
    assert windows[1].captions[0].time == pytest.approx(7.5 / 16)
    assert event_labels(windows[1]) == [0, EVENT_CLASSES.index("grab"), 0, 0]


def test_short_clip_is_padded_with_its_last_frame_and_unknown_verbs_are_ignored() -> None:
    clip = _clip(10, [0.3])
    clip.captions.append(Caption(0.55, "did something odd"))  # frame 8, step 2: no template fits
    (window,) = clip_windows(clip, 16)
    assert len(window.frames) == 16 and (window.frames[9:] == 9).all()
    assert event_labels(window) == [0, EVENT_CLASSES.index("grab"), IGNORE, 0]
    with pytest.raises(E2WMError, match="multiple of 4"):
        clip_windows(clip, 18)


def test_slot_labels_name_the_verb_object_place_and_actor() -> None:
    clip = _clip(16, [])
    clip.captions += [
        Caption(0.3, "person 2 put the mug in the fridge"),  # frame 4, step 1: slots parsed from the text
        Caption(0.55, "", {"verb": "grab", "object": "cup"}),  # frame 8, step 2: slots given
    ]
    vocabulary = slot_vocabulary([clip])
    assert vocabulary == {
        "object": [OTHER, "cup", "mug"],
        "place": [OTHER, "fridge"],
        "actor": [OTHER, "person 2"],
    }
    putin, grab = EVENT_CLASSES.index("putin"), EVENT_CLASSES.index("grab")
    none = [0, IGNORE, IGNORE, IGNORE]
    assert slot_labels(clip, vocabulary) == [none, [putin, 2, 1, 1], [grab, 1, IGNORE, IGNORE], none]
    # a value the training captions never stated is OTHER: scored, and never right
    assert slot_labels(clip, {**vocabulary, "object": [OTHER, "cup"]})[1] == [putin, 0, 1, 1]


def test_stage_1_loss_is_the_slot_weighted_sum_of_the_slots_cross_entropies() -> None:
    config = VideoEncoderConfig(**TINY_ENCODER)
    config.id2label = dict(enumerate(EVENT_CLASSES))
    config.label2id = {name: i for i, name in enumerate(EVENT_CLASSES)}
    config.slot_labels = {"object": [OTHER, "mug", "cup"], "place": [OTHER, "fridge"], "actor": [OTHER, "p1"]}
    torch.manual_seed(0)
    weights = (1.0, 0.5, 0.0, 2.0)
    weighted = train_video.VideoEventClassifier(config, weights)
    even = train_video.VideoEventClassifier(config)
    even.load_state_dict(weighted.state_dict())
    pixels = torch.randn(2, 3, 12, 32, 32)  # 3 feature steps
    labels = torch.tensor(
        [[[0, IGNORE, IGNORE, IGNORE], [3, 1, 1, 0], [5, 2, IGNORE, 1]], [[2, 0, IGNORE, 1]] * 3]
    )
    out = weighted(pixels, labels)
    parts = out.logits.split(weighted.sizes, dim=-1)
    ces = [  # mean over the steps that state the slot
        torch.nn.functional.cross_entropy(part.flatten(0, 1), labels[..., k].flatten(), ignore_index=IGNORE)
        for k, part in enumerate(parts)
    ]
    torch.testing.assert_close(out.loss, sum(w * ce for w, ce in zip(weights, ces, strict=True)))
    torch.testing.assert_close(even(pixels, labels).loss, sum(ces))


def test_augment_turns_or_mirrors_each_window_as_a_whole_and_keeps_its_labels(clips: Path) -> None:
    plain = EventWindows(VideoCaptionDirectory(clips, 32, 16.0), 32, None, 32)
    turned = EventWindows(VideoCaptionDirectory(clips, 32, 16.0), 32, None, 32, augment=True)
    x = plain[0]["pixel_values_videos"]  # [3, W, S, S]
    symmetries = [torch.rot90(m, k, dims=(2, 3)) for m in (x, x.flip(3)) for k in range(4)]
    assert len({tuple(t.flatten().tolist()) for t in symmetries}) == 8  # a window with no symmetry of its own
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        row = turned[0]
        assert torch.equal(row["labels"], plain[0]["labels"])
        # exactly one of the 8 symmetries, the same for every frame (the whole tensor matches it)
        (match,) = [i for i, t in enumerate(symmetries) if torch.equal(row["pixel_values_videos"], t)]
        seen.add(match)
    assert len(seen) == 8  # 40 draws: each symmetry is missed with probability (7/8)^40 < 0.5%


def test_only_the_train_renders_take_a_layout_per_episode(tmp_path: Path, monkeypatch) -> None:
    looks = []
    monkeypatch.setattr(train_video, "render_rollouts", lambda rollouts, out, n, s, look: looks.append(look))
    script = train_video.VideoScriptArguments(
        rollouts="r", episodes=4, eval_split="validation", eval_episodes=2, eval_layout_seed=1,
        layout_per_episode=True, render_cache=str(tmp_path),
    )  # fmt: skip
    encoder = VideoEncoderConfig(**TINY_ENCODER)
    train = train_video.render(script, "train", encoder, train=True)
    held_out = train_video.render(script, "validation", encoder, train=False)
    assert [(look.layout_per_episode, look.layout_seed) for look in looks] == [(True, None), (False, 1)]
    assert train != held_out
    monkeypatch.setattr(train_video, "RENDER_FORMAT", train_video.RENDER_FORMAT + 1)
    assert train_video.render(script, "train", encoder, train=True) != train  # new output: rendered anew


def test_a_linear_probe_reads_a_linear_slot_and_otherwise_guesses_the_majority() -> None:
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, size=(240, 2))
    # two features carry the class's bits by their sign, 1 or more away from 0; four are noise
    signal = (2 * bits - 1) * (1 + rng.random((240, 2)))
    x = np.concatenate([signal, rng.normal(size=(240, 4))], axis=1).astype(np.float32)
    y = bits[:, 0] + 2 * bits[:, 1]
    assert probe_accuracy(x[:180], y[:180], x[180:], y[180:], num_classes=4) == 1.0
    # features that say nothing: the bias learns the class shares, so the probe says the majority, 0
    blank = np.zeros((10, 3), dtype=np.float32)
    assert probe_accuracy(blank, [0] * 5 + [1] * 3 + [2] * 2, blank[:4], [0, 0, 1, 2], num_classes=3) == 0.5
    # one training row (a tenth of few labels): its class, not a NaN from the standardisation
    assert probe_accuracy(np.ones((1, 3), np.float32), [1], blank[:2], [1, 0], num_classes=2) == 0.5


def test_three_stages_train_and_each_output_loads(stages: dict[str, Path], clips: Path) -> None:
    # stage 1: slot accuracies (evaluated in training, then once more for its report); stage 2: a loss
    *_, eval1 = [h for h in stages["log1"] if "eval_loss" in h]
    assert 0 <= eval1["eval_accuracy"] <= 1 and 0 <= eval1["eval_event_accuracy"] <= 1
    # the majority guess, computed here from the (eval = train) clips' labels
    rows = EventWindows(VideoCaptionDirectory(clips, 32, 16.0), 32, None, 32)
    labels = torch.cat(rows.labels)
    objects = labels[(labels[:, 0] > 0) & (labels[:, 1] != IGNORE), 1]
    share = float((objects == torch.mode(objects).values).float().mean())
    assert eval1["eval_object_majority"] == pytest.approx(share, abs=1e-6)
    assert 0 <= eval1["eval_object_accuracy"] <= 1
    report = json.loads((stages["1"] / "slot_accuracy.json").read_text())
    assert report["encoder"]["eval_object_majority"] == eval1["eval_object_majority"]
    assert {"event", "object"} <= report["raw_frame_probe"].keys()
    assert all(0 <= v <= 1 for v in report["raw_frame_probe"].values())
    assert [h["step"] for h in stages["log2"] if "eval_loss" in h] == [2]
    encoder = VideoEncoder.from_pretrained(stages["1"], use_safetensors=True)
    assert encoder.config.image_size == 32 and encoder.config.hidden_size == 24
    assert encoder.config.id2label[0] == "none" and len(encoder.config.id2label) == len(EVENT_CLASSES)
    assert encoder.config.slot_labels == rows.vocabulary and encoder.config.render_style == "sprites"
    for stage in ("2", "3"):
        model = E2WMVideoForCausalLM.from_pretrained(stages[stage], use_safetensors=True)
        assert model.config.tokens_per_step == 2
        assert (stages[stage] / "processor_config.json").exists() and not list(stages[stage].glob("*.bin"))
        assert not (stages[stage] / "adapter_config.json").exists()  # stage 3 is merged
        assert read_recipe(stages[stage] / RECIPE_NAME)[0]["stage"] == int(stage)  # the pushed card names it
        encoded = {k: v for k, v in model.model.video_encoder.state_dict().items()}
        assert all(torch.equal(encoded[k], v) for k, v in encoder.state_dict().items())
    assert E2WMVideoForCausalLM.from_pretrained(stages["3"]).config.decision_loss_weight == 3.0


def test_stage2_changes_only_the_projector(stages: dict[str, Path], clips: Path) -> None:
    script, _, model_args = train_video.parse(
        ["--stage", "2", "--init_from", str(stages["1"]), "--model_name_or_path", str(stages["lm"]),
         "--clips", str(clips), "--tokens_per_step", "2", "--output_dir", "unused", "--use_cpu", "true"]
    )  # fmt: skip
    initial, _ = train_video.build_video_model(script, model_args, seed=0)
    before = initial.state_dict()
    after = load_file(stages["2"] / "model.safetensors")
    changed = {k for k, v in after.items() if not torch.equal(v, before[k])}
    projector = {k for k in before if k.startswith("model.multi_modal_projector.")}
    assert changed == projector


def test_stage3_merges_lora_into_the_lm_and_trains_the_projector(stages: dict[str, Path]) -> None:
    before = load_file(stages["2"] / "model.safetensors")
    after = load_file(stages["3"] / "model.safetensors")
    assert before.keys() == after.keys()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert any(re.search(r"language_model\.layers\.\d+\.self_attn\.(q|v)_proj\.weight", k) for k in changed)
    assert any(k.startswith("model.multi_modal_projector.") for k in changed)
    assert not any(k.startswith("model.video_encoder.") or "k_proj" in k or "mlp" in k for k in changed)
    # the decision tokens' rows of the embeddings and of the (untied) LM head trained too, and no other row
    config = E2WMVideoForCausalLM.from_pretrained(stages["3"]).config
    decisions = sorted([config.next_token_id, config.feedback_start_id, config.feedback_end_id])
    for weights in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        assert (after[weights] != before[weights]).any(dim=1).nonzero()[:, 0].tolist() == decisions


def test_stream_prints_utterances_frames_per_second_and_metrics(stages, clips, capsys) -> None:
    main(["stream", "--model", str(stages["3"]), "--clips", str(clips), "--threshold", "1.0"])
    out = capsys.readouterr().out.splitlines()
    said = [line for line in out if re.match(r"^\[ *\d+\.\d\ds\] ", line)]
    steps = sum(int(m.group(1)) // 4 for line in out if (m := re.match(r"^--- .*: (\d+) frames", line)))
    assert len(said) == steps > 0  # threshold 1: it speaks at every step
    assert re.search(r"streamed \d+ frames of 2 clip\(s\) in [\d.]+ s: [\d.]+ frames/s", "\n".join(out))
    metrics = next(line for line in out if line.startswith("temporal precision"))
    assert float(re.search(r"recall ([\d.]+)", metrics).group(1)) > 0
    main(
        [
            "stream",
            "--model",
            str(stages["3"]),
            "--clips",
            str(clips),
            "--threshold",
            "0.0",
            "--episodes",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert not re.search(r"^\[", out, re.M) and "of 1 clip(s)" in out
    assert "precision 1.000 recall 0.000 F1 0.000" in out  # silence: nothing said, every caption missed


def test_stage_3_rows_ask_the_first_windows_questions(stages, clips) -> None:
    model = E2WMVideoForCausalLM.from_pretrained(stages["3"])
    processor = AutoProcessor.from_pretrained(stages["3"])
    directory = VideoCaptionDirectory(clips, 32, 16.0)
    assert all(len(c.questions) > 4 for c in directory)
    window = 64  # the first window of each clip asks; the others do not
    rows = video_data.stream_rows(directory, processor, model.model.video_encoder, window, questions=4)
    names = [w.name for c in directory for w in clip_windows(c, window)]
    config = model.config  # an answer's <feedback> follows its question; an utterance's follows <video>
    asked = [
        sum(a == config.feedback_start_id and b != config.video_token_id for b, a in itertools.pairwise(r))
        for r in (row.tolist() for row in rows["input_ids"])
    ]
    assert [n for n, k in zip(names, asked, strict=True) if k] == [n for n in names if n.endswith("@0")]
    first = [k for n, k in zip(names, asked, strict=True) if n.endswith("@0")]
    assert all(1 <= k <= 4 for k in first) and max(first) == 4


def test_stream_answers_questions_mid_stream_and_blind(stages, clips, capsys) -> None:
    argv = ["stream", "--model", str(stages["3"]), "--clips", str(clips), "--questions", "3"]
    main([*argv, "--ask", "0:what is person 1 holding?", "999:is the fridge open?"])
    out = capsys.readouterr().out.splitlines()
    asked = [line for line in out if " Q: " in line]
    scored = [line for line in asked if "(expected: " in line]
    assert len(scored) == 6 and len(asked) == 10  # 3 drawn and 2 asked, per clip
    assert sum(x.startswith("[   0.00s] Q: what is person 1 holding? A: ") for x in asked) == 2
    [line] = [x for x in out if x.startswith("questions: accuracy")]
    accuracy = float(re.search(r"accuracy ([\d.]+) of 6", line).group(1))
    right = sum(answer_matches(*re.search(r" A: (.*) \(expected: (.*)\)$", x).groups()) for x in scored)
    assert accuracy == pytest.approx(right / 6)
    main([*argv, "--video-blind"])
    blind = capsys.readouterr().out
    assert blind.count("(expected: ") == 6 and "questions: accuracy" in blind
    for bad in ("3.5", "x:what?", "-1:what?", "2:  "):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, f"--ask={bad}"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "--ask takes SECONDS:QUESTION" in err and err.count("\n") == 1


def test_stream_renders_rollouts_as_the_encoder_saw_them(stages, drink, tmp_path, monkeypatch, capsys):
    rollouts = tmp_path / "rollouts"
    rollouts.mkdir()
    write_parquet(pa.Table.from_pylist([drink], schema=SCHEMA), rollouts / "x-00000-of-00001.parquet")
    looks = []

    def rendered(rollouts, split, episodes, look):
        looks.append(look)
        return real(rollouts, split, episodes, look)

    real = video_data.rollout_clips
    monkeypatch.setattr(video_data, "rollout_clips", rendered)
    main(["stream", "--model", str(stages["3"]), "--rollouts", str(rollouts), "--layout-seed", "7"])
    assert "streamed" in capsys.readouterr().out
    [look] = looks
    assert (look.style, look.layout_seed, look.size, look.fps) == ("sprites", 7, 32, 16)


def test_stream_a_video_without_captions_and_bad_inputs(stages, clips, tmp_path, capsys) -> None:
    video = tmp_path / "bare.mp4"
    video.write_bytes(next(clips.glob("*.mp4")).read_bytes())
    main(["stream", "--model", str(stages["2"]), "--video", str(video)])
    out = capsys.readouterr().out
    assert "frames/s" in out and "temporal precision" not in out
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"not a video" * 100)
    bad = [
        (["stream", "--model", str(tmp_path / "missing"), "--clips", str(clips)], "no trained video model"),
        (["stream", "--model", str(stages["1"]), "--clips", str(clips)], "not a video narrator"),
        (["stream", "--model", str(stages["3"]), "--video", str(corrupt)], "cannot decode video"),
        (["stream", "--model", str(stages["3"]), "--clips", str(tmp_path / "none")], "no such directory"),
    ]
    for argv, message in bad:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, err


def test_a_rerun_resumes_from_the_last_checkpoint(clips, tmp_path, capsys) -> None:
    argv = ["--stage", "1", "--clips", str(clips), *ENCODER, *TRAINING, "--output_dir", str(tmp_path)]
    argv += ["--save_strategy", "steps", "--save_steps", "1", "--save_total_limit", "1"]
    first = train_video.train(*train_video.parse(argv))
    assert [p.name for p in tmp_path.glob("checkpoint-*")] == ["checkpoint-2"]
    # Another seed would start from other weights: the losses of steps 1-2 show they were not run again.
    capsys.readouterr()
    again = train_video.train(*train_video.parse([*argv, "--max_steps", "3", "--seed", "1"]))
    assert f"resuming from {tmp_path / 'checkpoint-2'}" in capsys.readouterr().err
    losses = [(h["step"], h["loss"]) for h in again.state.log_history if "loss" in h]
    assert again.state.global_step == 3 and len(losses) == 3
    assert losses[:2] == [(h["step"], h["loss"]) for h in first.state.log_history if "loss" in h]
    assert (tmp_path / "config.json").exists() and not (tmp_path / ".tmp-final").exists()


@pytest.mark.parametrize("stage", ["1", "2", "3"])
def test_a_killed_stage_reruns_to_the_weights_of_an_uninterrupted_run(stage, stages, clips, tmp_path) -> None:
    """``kill -9`` of ``e2wm train-video`` (the whole process group) at a random point, then the same
    command: it resumes from the last checkpoint and ends with the weights an uninterrupted run ends with;
    no temporary and no lock is left. Stages 2 and 3 start from the previous stage's output."""
    given = {
        "1": ENCODER,
        "2": ["--init_from", str(stages["1"]), "--model_name_or_path", str(stages["lm"]),
              "--tokens_per_step", "2"],
        "3": ["--init_from", str(stages["2"]), "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8",
              "--lora_target_modules", "q_proj", "v_proj"],
    }[stage]  # fmt: skip
    steps = ["--max_steps", "6", "--save_strategy", "steps", "--save_steps", "1", "--save_total_limit", "1"]

    def argv(out: Path) -> list[str]:
        return ["train-video", "--stage", stage, "--clips", str(clips), *given, *TRAINING, *steps,
                "--output_dir", str(out)]  # fmt: skip

    reference, out = tmp_path / "reference", tmp_path / "out"
    main(argv(reference))
    kill_midway(argv(out), out, seed=7 + int(stage))
    main(argv(out))  # the same command again
    want, got = load_file(reference / "model.safetensors"), load_file(out / "model.safetensors")
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "reference"]
    assert not list(out.glob(".tmp*"))


def test_bad_training_configs_exit_2_with_one_line(stages, clips, tmp_path, capsys) -> None:
    base = ["--clips", str(clips), "--output_dir", str(tmp_path / "out"), "--use_cpu", "true"]
    bad = [
        (["--stage", "4", *base], "stage must be 0, 1, 2 or 3"),
        (["--stage", "0", *base, "--init_from", str(stages["1"])], "stage 0 trains a new encoder"),
        (["--stage", "0", *base, "--window_frames", "32", "--predict_steps", "8"], "predict_steps must be"),
        (["--stage", "1", *base, "--label_fraction", "0"], "label_fraction must be in (0, 1]"),
        (["--stage", "1", *base, "--render_style", "cubes"], "unknown render_style 'cubes'"),
        (["--stage", "1", *base, "--slot_loss_weights", "1", "0.1"], "slot_loss_weights: one weight"),
        (["--stage", "1", *base, "--slot_loss_weights", "0", "1", "1", "1"], "the verb's > 0"),
        (["--stage", "3", *base], "stage 3 needs init_from"),
        (["--stage", "3", "--init_from", str(stages["2"]), *base], "set use_peft"),
        (["--stage", "2", "--init_from", str(stages["2"]), *base], "not a 'e2wm_video_encoder' one"),
        (
            [
                "--stage",
                "1",
                "--clips",
                str(tmp_path),
                "--output_dir",
                str(tmp_path / "o"),
                "--use_cpu",
                "true",
            ],
            "no videos",
        ),
        (["--stage", "1", *base, "--window_frames", "30"], "multiple of 4"),
        (["--stage", "1", *base, "--stage_channels", "8", "16"], "same length"),
        (["--config", str(tmp_path / "missing.yaml")], "no such file"),
    ]
    for argv, message in bad:
        with pytest.raises(SystemExit) as exit_info:
            train_video.main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, err
