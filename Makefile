# make demo: a small real ablation, offline, on 2 CPU cores.   make test: the test suite, offline.
# make docs-check: re-measure the numbers the docs quote.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# Installed first so the project's `torch>=...` range accepts it instead of pulling another build.
# For a CUDA build: make TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128" install
TORCH_SPEC ?= torch==2.13.0
OFFLINE := HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline
DEMO_DIR ?= logs/multiruns/demo

.PHONY: install demo test docs-check clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[test]"
	touch $@
	@echo "installed; in each new shell: . $(VENV)/bin/activate"

demo: install
	$(OFFLINE) $(PY) train.py -m experiment=demo hydra.sweep.dir=$(DEMO_DIR)
	$(VENV)/bin/reglab-report $(DEMO_DIR) --paper --out $(DEMO_DIR)/report
	@echo "next, in each new shell: . $(VENV)/bin/activate   (then python train.py ..., eval.py and reglab-report work as the README writes them)"

test: install  # on every core (pytest-xdist): the tests are independent, each in its own temporary folders
	$(OFFLINE) $(PY) -m pytest -q -n auto

docs-check: install  # re-measure the cheap numbers README and docs/ quote (about 4 min); update the docs from it
	$(OFFLINE) $(PY) scripts/docs_check.py

clean:
	rm -rf logs .cache .pytest_cache
