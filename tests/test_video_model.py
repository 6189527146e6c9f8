"""The video + LM model: round trip, placeholders, loss, LoRA, SFTTrainer, generate, streaming narration."""

import math

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from support.tiny_lm import TINY_ENCODER
from support.tolerances import (
    assert_float32_close,
    float32_differ,
    float32_tolerance,
    llama_roundings,
    video_encoder_roundings,
)
from transformers import AutoModelForCausalLM, AutoProcessor, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from e2wm.errors import E2WMError
from e2wm.multimodal import (
    E2WMVideoForCausalLM,
    E2WMVideoProcessor,
    StreamingNarrator,
    VideoEncoderConfig,
)
from e2wm.multimodal.modeling import weighted_lm_loss

pytestmark = pytest.mark.usefixtures("one_thread")
LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=r".*language_model.*\.(q_proj|v_proj)")


def build(lm, tokens_per_step=2, seed=0):
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(lm)
    model = E2WMVideoForCausalLM.from_language_model(
        str(lm), tokenizer, VideoEncoderConfig(**TINY_ENCODER), tokens_per_step=tokens_per_step
    )
    return model, E2WMVideoProcessor(tokenizer, tokens_per_step=tokens_per_step, image_size=32)


@pytest.fixture(scope="module")
def built(lm):
    return build(lm)


def random_clip(frames=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (frames, 32, 32, 3), dtype=torch.uint8, generator=g)


def batched(example):
    return {k: v[None] for k, v in example.items()}


def projector_roundings(config) -> int:
    """LayerNorm (two D-term sums, a subtraction, a square, eps, rsqrt, a product, the affine: 2 D + 9),
    the first linear layer (D terms and a bias), the activation (4), the second (H terms and a bias)."""
    d, h = config.video_config.hidden_size, config.text_config.hidden_size
    return 2 * d + 9 + d + 1 + 4 + h + 1


def roundings(model) -> int:
    """The video model from the frames to the log-softmax (tolerances.py): encoder, projector, LM."""
    config, lm = model.config, model.config.text_config
    return (
        video_encoder_roundings(config.video_config)
        + projector_roundings(config)
        + llama_roundings(lm, lm.max_position_embeddings)
    )


@pytest.fixture(scope="module")
def example(built):
    _, processor = built
    return processor.stream_example(
        random_clip(), 16.0, [(0.3, "open fridge"), (0.9, "grab mug")], "what is this ?"
    )


def test_stream_example_layout(built):
    model, processor = built
    tok = processor.tokenizer
    ex = processor.stream_example(random_clip(), 16.0, [(0.5, "open fridge"), (0.6, "grab mug")], "plan :")
    step = ["<video>", "<video>"]
    said = ["<feedback>", "open", "fridge", "grab", "mug", "</feedback>"]
    expected = ["plan", ":", *step, "<next>", *step, "<next>", *step, *said, *step, "<next>"]
    assert tok.convert_ids_to_tokens(ex["input_ids"]) == expected
    targets = ex["labels"] != -100
    assert tok.convert_ids_to_tokens(ex["input_ids"][targets]) == ["<next>", "<next>", *said, "<next>"]
    assert not (targets & (ex["input_ids"] == model.config.video_token_id)).any()
    assert ex["pixel_values_videos"].shape == (3, 16, 32, 32) and ex["attention_mask"].all()
    with pytest.raises(E2WMError, match="outside the clip"):
        processor.stream_example(random_clip(), 16.0, [(1.0, "open fridge")])
    assert processor.stream_example(random_clip(18), 16.0, [])["pixel_values_videos"].shape[1] == 16


def test_collate_pads_tokens_and_stacks_clips(built):
    _, processor = built
    short = processor.stream_example(random_clip(), 16.0, [])
    long = processor.stream_example(random_clip(seed=1), 16.0, [(0.5, "open fridge")])
    batch = processor.collate([short, {k: v.tolist() for k, v in long.items()}])
    n, m = len(short["input_ids"]), len(long["input_ids"])
    assert (
        batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, m) and n < m
    )
    assert (batch["input_ids"][0, n:] == processor.tokenizer.pad_token_id).all()
    assert (batch["labels"][0, n:] == -100).all() and batch["attention_mask"][0].sum() == n
    assert torch.equal(batch["labels"][1], long["labels"])
    assert batch["pixel_values_videos"].shape == (2, 3, 16, 32, 32)
    with pytest.raises(E2WMError, match="same number of frames"):
        processor.collate([short, processor.stream_example(random_clip(8), 16.0, [])])


def test_round_trip_through_auto_classes_gives_identical_logits(built, example, tmp_path):
    model, processor = built
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, use_safetensors=True)
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is E2WMVideoForCausalLM and type(loaded_processor) is E2WMVideoProcessor
    assert loaded.config.tokens_per_step == 2 and loaded_processor.tokens_per_step == 2
    again = loaded_processor.stream_example(
        random_clip(), 16.0, [(0.3, "open fridge"), (0.9, "grab mug")], "what is this ?"
    )
    assert all(torch.equal(again[k], example[k]) for k in example)
    with torch.no_grad():
        assert torch.equal(loaded(**batched(again)).logits, model(**batched(example)).logits)


def test_projected_tokens_keep_the_embeddings_scale_whatever_the_features_scale(built):
    model, _ = built
    projector = model.model.multi_modal_projector
    features = torch.randn(
        1, 6, model.config.video_config.hidden_size, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        small, large = projector(features), projector(1000 * features)
        embeddings = model.get_input_embeddings().weight.norm(dim=-1).mean()
        # Exactly, the two differ only by the LayerNorm's eps: x / sqrt(var + eps) is (1 - eps / (2 var))
        # times x / sqrt(var), for the small features (1e6 times less for the large ones); the linear
        # layers and the activation (slope at most 1.13) carry that to the output within the sums of |terms|
        # below. Plus the rounding of two float32 results (tolerances.py).
        norm, first, second = projector.norm, projector.linear_1, projector.linear_2
        var = features.double().var(dim=-1, unbiased=False, keepdim=True)
        normed = norm(features).double().abs() + norm.bias.double().abs()  # |gamma x_hat| <= |LN(x)| + |beta|
        hidden = first.weight.double().abs() @ normed.transpose(1, 2)
        hidden = hidden.transpose(1, 2) + (0 if first.bias is None else first.bias.double().abs())
        terms = hidden @ second.weight.double().abs().T + (
            0 if second.bias is None else second.bias.double().abs()
        )
        terms = terms.reshape(small.shape)
        per_step = (norm.eps / (2 * var)).repeat_interleave(model.config.tokens_per_step, dim=1)
        bound = 1.13 * per_step * terms + float32_tolerance(projector_roundings(model.config), 2 * terms)
    assert ((large - small).abs() <= bound).all(), (large - small).abs().max()
    assert 0.1 < small.norm(dim=-1).mean() / embeddings < 10


def test_placeholder_mismatch_raises(built, example):
    model, processor = built
    inputs = batched(example)
    one_less = inputs["input_ids"].clone()
    one_less[0, (one_less[0] == model.config.video_token_id).nonzero()[0]] = processor.next_token_id
    with torch.no_grad(), pytest.raises(E2WMError, match="placeholders"):
        model(input_ids=one_less, pixel_values_videos=inputs["pixel_values_videos"])
    with torch.no_grad(), pytest.raises(E2WMError, match="placeholders"):
        model(input_ids=inputs["input_ids"])
    with pytest.raises(E2WMError, match="one <video>"):
        processor(text="<video> and <video>", videos=random_clip())


def test_loss_ignores_video_positions(built, example):
    model, _ = built
    inputs = batched(example)
    video = inputs["input_ids"] == model.config.video_token_id
    scribbled = inputs["labels"].masked_fill(video, 7)
    decision = inputs["labels"].clone()
    decision[inputs["labels"] == model.config.next_token_id] = 7
    with torch.no_grad():
        loss = model(**inputs).loss
        assert torch.equal(model(**{**inputs, "labels": scribbled}).loss, loss)
        n = roundings(model) + inputs["labels"].numel() + 4  # and a sum of token losses (all >= 0)
        assert float32_differ(model(**{**inputs, "labels": decision}).loss, loss, n, 2 * loss)


def test_decision_weight_on_a_hand_checkable_case():
    """Uniform logits over 4 tokens: every target costs log 4; 1 decision and 2 other targets."""
    logits = torch.zeros(1, 4, 4)
    labels = torch.tensor([[-100, 3, 1, 2]])  # 3 is the decision token
    # float32: the log-softmax over 4 logits (4 + 4 roundings), the weights, the 3-term sum, the division
    rel = float32_tolerance(4 + 4 + 1 + 2 + 1, 1.0)
    for weight in (0.0, 1.0, 3.0):
        loss = weighted_lm_loss(logits, labels, [3], weight)
        assert math.isclose(loss.item(), (weight + 2) / 3 * math.log(4), rel_tol=rel)
    assert math.isclose(
        weighted_lm_loss(logits, labels, [3], 3.0, 10).item(), 5 / 10 * math.log(4), rel_tol=rel
    )


def test_decision_weight_scales_only_the_decision_tokens(built, example):
    model, _ = built
    inputs = batched(example)
    with torch.no_grad():
        out = model(**inputs)
    targets = inputs["labels"][0, 1:]
    ce = torch.nn.functional.cross_entropy(out.logits[0, :-1], targets, ignore_index=-100, reduction="none")
    is_decision = (targets == model.config.next_token_id) | (targets == model.config.feedback_start_id)
    n = (targets != -100).sum()
    assert is_decision.sum() == 4 and n > 4  # 4 steps: next, feedback, next, feedback
    losses = {}
    for weight in (1.0, 4.0):
        model.config.decision_loss_weight = weight
        with torch.no_grad():
            losses[weight] = model(**inputs)
        expected = (weight * ce[is_decision].sum() + ce[~is_decision].sum()) / n
        # The same logits (the same forward pass); the token losses (log-softmax over the vocabulary), the
        # weights, the sum over the targets (all >= 0), the division: two float32 results.
        loss_roundings = model.config.text_config.vocab_size + 4 + 1 + len(targets) + 1
        assert_float32_close(losses[weight].loss, expected, loss_roundings, 2 * expected)
    model.config.decision_loss_weight = 1.0
    assert losses[4.0].loss > losses[1.0].loss


def test_lora_on_the_lm_with_a_trainable_projector(lm, example):
    model, _ = build(lm)
    peft_model = get_peft_model(model, LoraConfig(**LORA, modules_to_save=["multi_modal_projector"]))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    lora = [n for n in trainable if "lora_" in n]
    projector = [n for n in trainable if "multi_modal_projector.modules_to_save" in n]
    assert lora and projector and sorted(lora + projector) == sorted(trainable)
    assert all(".language_model." in n and ("q_proj" in n or "v_proj" in n) for n in lora)
    peft_model(**batched(example)).loss.backward()
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0
        for n, p in peft_model.named_parameters()
        if n in projector
    )
    frozen = [p for p in peft_model.parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for p in frozen)


def test_sft_trainer_trains_lora_and_projector_for_two_steps(lm, tmp_path):
    model, processor = build(lm)
    rows = [
        processor.stream_example(
            random_clip(seed=i), 16.0, [(0.2 * (i + 1), "open fridge"), *extra], "what ?"
        )
        for i, extra in enumerate([[], [(0.1, "grab mug")], [], [(0.9, "put mug")]])
    ]
    dataset = Dataset.from_list([{k: v.numpy() for k, v in r.items()} for r in rows])
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=processor.collate,
        processing_class=processor.tokenizer,
        peft_config=LoraConfig(**LORA, modules_to_save=["multi_modal_projector"]),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.state.global_step == 2
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert any("lora_B" in n for n in changed) and any(
        "multi_modal_projector.modules_to_save" in n for n in changed
    )
    assert all("lora_" in n or "modules_to_save" in n for n in changed)


def test_generate_with_video_matches_greedy_full_forwards(built):
    model, processor = built
    inputs = processor(text="what is this ? <video>", videos=random_clip())
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        features = model.model.video_encoder(inputs["pixel_values_videos"])
        from_features = model.generate(
            input_ids=inputs["input_ids"], video_features=features, max_new_tokens=5, do_sample=False
        )
        ids = inputs["input_ids"]
        for _ in range(5):
            logits = model(input_ids=ids, pixel_values_videos=inputs["pixel_values_videos"]).logits
            ids = torch.cat([ids, logits[:, -1:].argmax(-1)], dim=1)
    assert generated.shape == (1, inputs["input_ids"].shape[1] + 5)
    assert torch.equal(generated, ids) and torch.equal(from_features, ids)


def stream(narrator, clip, chunks):
    said, logits, t = [], [], 0
    for n in chunks:
        before = narrator.steps
        said += narrator.feed(clip[t : t + n])
        if narrator.steps > before:
            assert narrator.steps == before + 1  # one step per call here, so last_logits is that step's
            logits.append(narrator.last_logits)
        t += n
    return said, logits


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_streaming_matches_a_whole_sequence_forward(built, threshold):
    model, processor = built
    clip = random_clip(24, seed=3)
    narrator = StreamingNarrator(
        model, processor, threshold=threshold, max_utterance_tokens=2, prompt="what is this ?"
    )
    said, decision_logits = stream(narrator, clip, [3, 1, 4, 2, 2, 4, 4, 4])
    assert len(decision_logits) == 6
    ids = torch.tensor([narrator.token_ids])
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values_videos=processor.preprocess_frames(clip)[None]).logits[0]
    video = (ids[0] == model.config.video_token_id).nonzero()[:, 0]
    last_of_step = video[1::2]  # k = 2 <video> tokens per step
    assert len(last_of_step) == 6
    for position, streamed in zip(last_of_step, decision_logits, strict=True):
        # two float32 results, each within its rounding bound of the exact logits (tolerances.py)
        assert_float32_close(streamed, logits[position], roundings(model), 2 * logits[position].abs().max())
    decided = ids[0, last_of_step + 1]
    if threshold == 0.0:
        assert said == [] and (decided == model.config.next_token_id).all()
    else:
        assert [t for t, _ in said] == [(4 * i + 3) / 16 for i in range(6)]
        assert (decided == model.config.feedback_start_id).all()
        assert narrator.token_ids.count(model.config.feedback_end_id) == 6


def overfit(model, example, steps: int) -> float:
    """Train ``model`` on the one ``example`` with Adam at 1e-2; the last step's loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model(**example).loss
        loss.backward()
        optimizer.step()
    return loss.item()


def test_overfit_model_narrates_its_clip_at_the_right_steps(lm):
    """Train on one clip with two captions; streaming then says them at their steps and nothing else."""
    model, processor = build(lm, tokens_per_step=1, seed=1)
    clip = torch.zeros(24, 32, 32, 3, dtype=torch.uint8)
    clip[4:, 8:16, 8:16] = 255  # a white square appears at frame 4 (step 1)
    clip[16:, 8:16, 8:16, 1:] = 0  # and turns red at frame 16 (step 4)
    example = batched(processor.stream_example(clip, 16.0, [(0.25, "open fridge"), (1.0, "grab mug")]))
    assert overfit(model, example, 80) < 0.05
    narrator = StreamingNarrator(model, processor)
    said = narrator.feed(clip[:10]) + narrator.feed(clip[10:13]) + narrator.feed(clip[13:])
    assert said == [((4 * 1 + 3) / 16, "open fridge"), ((4 * 4 + 3) / 16, "grab mug")]
    narrator.reset()
    assert narrator.feed(clip) == said


def test_overfit_model_answers_questions_asked_mid_stream(lm):
    """Train on one clip whose questions have different answers before and after an event; asked mid-stream,
    the answers follow what has been watched, and the narration around them stays the same."""
    model, processor = build(lm, tokens_per_step=1, seed=2)
    clip = torch.zeros(24, 32, 32, 3, dtype=torch.uint8)
    clip[8:, 8:16, 8:16] = 255  # a white square (an open fridge) appears at frame 8 (step 2)
    asked = "is the fridge open?"
    questions = [(0.25, asked, "no"), (0.75, asked, "yes"), (1.25, asked, "yes")]  # steps 1, 3 and 5
    example = processor.stream_example(clip, 16.0, [(0.6, "open fridge")], questions=questions)
    ids, labels = example["input_ids"].tolist(), example["labels"].tolist()
    question = processor.question_ids(asked)
    starts = [i for i in range(len(ids)) if ids[i : i + len(question)] == question]
    assert len(starts) == 3
    for start in starts:  # the question is read, not trained on; its answer is an utterance
        assert labels[start : start + len(question)] == [-100] * len(question)
        assert ids[start - 1] in (model.config.next_token_id, model.config.feedback_end_id)
        assert ids[start + len(question)] == labels[start + len(question)] == model.config.feedback_start_id
    assert overfit(model, batched(example), 100) < 0.05
    narrator = StreamingNarrator(model, processor)
    assert narrator.ask(asked) == StreamingNarrator.NOTHING_WATCHED  # before any frame: said so, no crash
    answers, said = [], []
    for step in range(6):
        said += narrator.feed(clip[4 * step : 4 * step + 4])
        if step in (1, 3, 5):
            answers.append(narrator.ask(asked))
    assert answers == ["no", "yes", "yes"]
    assert said == [((4 * 2 + 3) / 16, "open fridge")]
    assert narrator.token_ids == ids  # the sequence it was trained on, question tokens included


def test_narrator_rejects_bad_frames(built):
    narrator = StreamingNarrator(*built)
    with pytest.raises(E2WMError):
        narrator.feed(torch.zeros(4, 32, 32, 3))
    narrator.feed(random_clip(2))
    with pytest.raises(E2WMError, match="frame size"):
        narrator.feed(torch.zeros(4, 16, 16, 3, dtype=torch.uint8))
