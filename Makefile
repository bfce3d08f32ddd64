# Two commands a new user needs:  `make run` (main job)  and  `make test` (test suite).
# Both create the virtual environment in $(VENV) when it is missing and install policylab into it.
VENV ?= .venv
PY := $(VENV)/bin/python
# On a machine without an NVIDIA GPU and without torch, this CPU build is installed first so that
# the `torch>=...` range in pyproject.toml is already satisfied and never pulls a CUDA wheel.
# Elsewhere, e.g.: make TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.policylab-installed
DATASET := data/hopper_random-v5.hdf5

.PHONY: install run test dataset clean-venv

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

$(DATASET): | $(STAMP)
	$(PY) -m policylab.datasets record --env Hopper-v5 --policy random --steps 100000 --seed 0 --out $(DATASET)

dataset: $(DATASET)

run: $(STAMP) $(DATASET)
	$(PY) cli.py fit --config configs/td3bc_hopper.yaml

test: $(STAMP)
	$(PY) -m pytest

clean-venv:
	rm -rf $(VENV)
