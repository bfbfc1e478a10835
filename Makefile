# The two commands: `make serve` and `make test`. Both install everything first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test serve generate bench lint gpu-check

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# A CPU build of torch from the local wheel when none is present; GPU users keep theirs.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	# The versions the tests passed with (constraints.txt), so a new upstream release cannot break a clean clone.
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest

serve: install
	$(VENV)/bin/tandem serve

generate: install
	$(VENV)/bin/tandem generate --mode ar --max-tokens 64 "def parse_args("

bench: install
	$(VENV)/bin/tandem bench modes

lint: install
	$(VENV)/bin/ruff check .

gpu-check:
	bash scripts/gpu_check.sh
