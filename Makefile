# Set-up in one command each:  `make all` (the pipeline)  and  `make test` (the test suite).
# Both create a local virtual environment in .venv on first use and reuse it afterwards, with the
# exact versions of requirements.lock (reinstalled when the lock or pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed
CORES ?= 8
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PYTHONUNBUFFERED := 1

.PHONY: all test install bench lint dry-run lab clean

all: $(STAMP)
	snakemake --cores $(CORES) all

test: $(STAMP)
	pytest

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.lock
	$(VENV)/bin/python -m pip install --quiet --no-deps -e .
	$(VENV)/bin/python -m pip check
	touch $(STAMP)

bench: $(STAMP)
	python -m benchmarks

lint: $(STAMP)
	snakemake --lint
	snakemake -n all

lab: $(STAMP)
	jupyter lab notebooks/

clean:
	rm -rf results/smoke results/test figures/smoke figures/test .snakemake
