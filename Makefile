# nanoTLDR. `make demo` and `make test` do their own set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: install test bench clean demo

# The environment is rebuilt when requirements.txt changes.
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) bench.py

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
last         = $$(ls -d $(DEMO)/$(1)/step_* | tail -n 1)
# the official choice (chosen.json: dev accuracy > 0.7 x A_L, fewest dev tokens), else the last checkpoint
chosen       = $$($(PY) -c "import json,sys; print(json.load(open(sys.argv[1]))['checkpoint'])" $(DEMO)/$(1)/chosen.json 2>/dev/null || ls -d $(DEMO)/$(1)/step_* | tail -n 1)

demo: install $(DEMO)/report.done

$(DEMO)/data.done:
	$(PY) data/demo.py --out $(DEMO)/data --seed $(SEED) $(DATA_FLAGS)
	touch $@

$(DEMO)/init.done: $(DEMO)/data.done
	$(PY) data/tiny.py --out $(DEMO)/init --tokenizer $(DEMO)/data/tokenizer --seed $(SEED) $(MODEL_FLAGS)
	touch $@

$(DEMO)/long.done: $(DEMO)/init.done
	$(PY) train.py config/demo_long.py --model=$(DEMO)/init --system2=$(DEMO)/data/system2_seed.jsonl \
		--out_dir=$(DEMO)/long --seed=$(SEED) --resume $(LONG_FLAGS)
	touch $@

$(DEMO)/short.done: $(DEMO)/init.done
	$(PY) train.py config/demo_short.py --model=$(DEMO)/init --system1=$(DEMO)/data/short_seed.jsonl \
		--out_dir=$(DEMO)/short --seed=$(SEED) --resume $(SHORT_FLAGS)
	touch $@

$(DEMO)/bounds.done: $(DEMO)/long.done $(DEMO)/short.done
	$(PY) data/build.py bounds --short $(call last,short) --long $(call last,long) \
		--problems $(DEMO)/data/dev.jsonl --out $(DEMO)/bounds.json --seed $(SEED) $(SAMPLING)
	touch $@

$(DEMO)/system2.done: $(DEMO)/long.done
	$(PY) data/build.py system2 --model $(call last,long) --problems $(DEMO)/data/s2_problems.jsonl \
		--out $(DEMO)/system2.jsonl --n $(SAMPLES) --seed $(SEED) $(SAMPLING)
	touch $@

$(DEMO)/tldr.done $(DEMO)/static.done: $(DEMO)/%.done: $(DEMO)/bounds.done $(DEMO)/system2.done
	$(PY) train.py config/demo_tldr.py --mixture=$(if $(filter tldr,$*),dynamic,static) --model=$(call last,long) \
		--system1=$(DEMO)/data/system1.jsonl --system2=$(DEMO)/system2.jsonl --dev=$(DEMO)/data/dev.jsonl \
		--bounds=$(DEMO)/bounds.json --dev_max_new_tokens=$(MAX_NEW) --out_dir=$(DEMO)/$* --seed=$(SEED) \
		--resume $(TLDR_FLAGS)
	touch $@

$(DEMO)/eval-long.done $(DEMO)/eval-short.done: $(DEMO)/eval-%.done: $(DEMO)/%.done
	$(PY) evaluate.py --model $(call last,$*) --bench $(DEMO)/data/test.jsonl --samples 1 --seed $(SEED) \
		--temperature 0.7 --top-p 1.0 --max-new-tokens $(MAX_NEW) --out-dir $(DEMO)/eval/$*
	touch $@

$(DEMO)/eval-tldr.done $(DEMO)/eval-static.done: $(DEMO)/eval-%.done: $(DEMO)/%.done
	$(PY) evaluate.py --model $(call chosen,$*) --bench $(DEMO)/data/test.jsonl --samples 1 --seed $(SEED) \
		--temperature 0.7 --top-p 1.0 --max-new-tokens $(MAX_NEW) --out-dir $(DEMO)/eval/$*
	touch $@

$(DEMO)/report.done: $(DEMO)/eval-long.done $(DEMO)/eval-short.done $(DEMO)/eval-tldr.done $(DEMO)/eval-static.done
	$(PY) data/demo.py --report $(DEMO)
	touch $@
