# One-command entry points: both create .venv when it is missing.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint bench docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,ray,slurm]'
	touch $(STAMP)

# One BadNets run (table + run directory), then a quick study ending in an HTML report.
demo: $(STAMP)
	$(BIN)/triggerlab run
	$(BIN)/triggerlab grid configs/demo_study.yaml --out grids/demo_study --workers 2
	$(BIN)/triggerlab results grids/demo_study
	$(BIN)/triggerlab report grids/demo_study

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs examples
	$(BIN)/ruff format --check src tests benchmarks docs examples
	$(BIN)/python -m pytest -q

# The fast lane (under 3 minutes on the 2-core machine): no test that trains for seconds or
# starts a cluster; `make test` (what CI runs) runs everything.
check: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs examples
	$(BIN)/ruff format --check src tests benchmarks docs examples
	$(BIN)/python -m pytest -q -m "not slow and not cluster"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs examples

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/triggers.py

docs: $(STAMP)
	$(BIN)/python docs/make_trigger_gallery.py
	$(BIN)/python docs/make_study_figures.py

clean:
	rm -rf $(VENV) runs grids .pytest_cache
