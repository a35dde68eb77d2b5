# Three commands do all the set-up: `make demo`, `make serve` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo serve test bench lint clean-cache

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

# the newest finished demo run, made first if there is none; then http://127.0.0.1:8000/
serve: $(VENV)/.installed
	@run=$$(ls -d runs/demo-*/results.json 2>/dev/null | sort | tail -n 1); \
	if [ -z "$$run" ]; then $(MAKE) demo || exit 1; \
		run=$$(ls -d runs/demo-*/results.json | sort | tail -n 1); fi; \
	$(BIN)/xmodal serve "$$(dirname "$$run")"

# the real-data tests run on the Tux Paint stamps (fetched once into data/)
test: $(VENV)/.installed
	$(BIN)/xmodal data fetch tuxpaint
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
