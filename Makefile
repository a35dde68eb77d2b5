# Two commands do all the set-up: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench lint clean-cache

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# constraints-cpu.txt pins torch to the CPU build, so that no dependency pulls a multi-GB CUDA
# build; the extras are what the tests exercise
EXTRAS ?= dev,zoo,mpnet
$(VENV)/.installed: pyproject.toml constraints-cpu.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints-cpu.txt -e '.[$(EXTRAS)]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/xmodal data fetch tuxpaint
	$(BIN)/xmodal run configs/demo.yaml

test: $(VENV)/.installed
	$(BIN)/pytest -q

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/run_all.py

# ruff (style), mypy (types, at the strictness stated in pyproject.toml), import-linter (stages
# import only downward)
lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

clean-cache:
	rm -rf cache
