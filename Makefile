# Two commands a new user needs:  `make run` (main job)  and  `make test` (test suite); `make lint` checks the code.
# Both create the virtual environment in $(VENV) when it is missing and install policylab into it.
VENV ?= .venv
PY := $(VENV)/bin/python
# On a machine without an NVIDIA GPU and without torch, this CPU build is installed first so that
# the `torch>=...` range in pyproject.toml is already satisfied and never pulls a CUDA wheel.
# Elsewhere, e.g.: make TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.policylab-installed
# The tests also cover the language-model code, so they install its extras (transformers, ...).
TEST_STAMP := $(VENV)/.policylab-test-installed

.PHONY: install run test lint dataset arithmetic clean-venv

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	@if $(PY) -c "import torch" 2>/dev/null; then \
	    echo "keeping the installed torch: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
	    echo "NVIDIA GPU found: torch comes from the default index with CUDA"; \
	else \
	    $(PY) -m pip install "$(TORCH_SPEC)"; \
	fi
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -e ".[dev,lm,diffusion]"
	touch $(TEST_STAMP)

# The main job trains on the Hopper medium-replay set shipped in policylab/data/hopper: no download.
run: $(STAMP)
	$(PY) cli.py fit --config configs/a2pr_hopper.yaml

# The addition task of the language-model configs: tokenizer, initial tiny LM, SFT rows, pairs, eval prompts.
arithmetic: $(TEST_STAMP)
	$(PY) -m policylab.tasks.arithmetic --out data/arithmetic

# Regenerate the random and medium Hopper sets (1M steps each, D4RL's size) from the shipped policies.
dataset: $(STAMP)
	$(PY) -m policylab.datasets build hopper --from-bundle --kinds random medium

test: $(TEST_STAMP)
	$(PY) -m pytest

# ruff (in the dev extras) with the settings of pyproject.toml: lint, and formatting left as ruff writes it.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean-venv:
	rm -rf $(VENV)
