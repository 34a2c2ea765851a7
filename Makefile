# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (or set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python setup.py pyproject.toml
	$(BIN)/pip install -q '.[test]'
	@touch $(STAMP)

install: $(STAMP)
	@# reinstall our own code (not its dependencies) so twistd sees the current tree
	$(BIN)/pip install -q --no-deps --force-reinstall . >/dev/null

# The demo's media server speaks prompts made by espeak-ng (make prompts), when it is
# installed; otherwise the flows play silence, and one line says how to get voices.
run: install
	@if command -v espeak-ng >/dev/null 2>&1; then $(MAKE) --no-print-directory prompts; \
	else echo "no espeak-ng: the media server's prompts (*43, *60, *88) play as silence;" \
	  "for spoken prompts: apt-get install espeak-ng (then make run, or make prompts)"; fi
	$(BIN)/twistd -n b2bua

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	PYTHONPATH=$(CURDIR) $(BIN)/python tools/run_tests.py tests

bench: $(STAMP)
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/sip_parse.py

# Prompt WAVs for the media server, spoken by espeak-ng (apt-get install espeak-ng);
# generated, never committed: only changed or missing prompts are remade.
.PHONY: prompts
prompts: $(BIN)/python
	PYTHONPATH=$(CURDIR) $(BIN)/python tools/make_prompts.py --out prompts

clean:
	rm -rf build *.egg-info _trial_temp
