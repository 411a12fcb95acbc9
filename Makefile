# Set-up in one command each:  `make all` (the pipeline)  and  `make test` (the test suite).
# Both create a local virtual environment in .venv on first use and reuse it afterwards, with the
# exact versions of requirements.lock (reinstalled when the lock or pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed
CORES ?= 8
PROFILE ?= smoke
SNAKEFLAGS ?=
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PYTHONUNBUFFERED := 1

.PHONY: all test install bench lint dry-run report reference reference-export help lab clean

all: $(STAMP)
	snakemake --cores $(CORES) all $(SNAKEFLAGS)
	snakemake --report results/smoke/report.html
	@echo ""
	@echo "Done (profile smoke: tiny-scale numbers). Open:"
	@echo "  results/smoke/claims.md      each paper's headline claim, the paper's number and ours (also claims.html)"
	@echo "  results/smoke/report.html    every figure, table and executed notebook, grouped by paper"
	@echo "  results/smoke/html/          the executed notebooks as HTML; figures in figures/smoke/"
	@echo "  make lab                     the notebooks in JupyterLab (Run All reads these results)"

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

# the committed reference records (reference/<profile>/): notebooks, reference/claims.md and README's claims
# table rendered from them, nothing trained; `make reference-export PROFILE=cifar10-cpu` copies a finished run there
reference: $(STAMP)
	python -m robust_mim.reporting.reference render
	@echo "Executed notebooks: results/reference/<profile>/html/; claims of every reference profile: reference/claims.md"

reference-export: $(STAMP)
	python -m robust_mim.reporting.reference export results/$(PROFILE)

lab: $(STAMP)
	jupyter lab notebooks/

dry-run: $(STAMP)
	snakemake -n all $(SNAKEFLAGS)

report: $(STAMP)
	snakemake --report results/smoke/report.html

help:
	@echo "make all      install .venv if needed, then run the pipeline: snakemake --cores $(CORES) all"
	@echo "make dry-run  list the jobs 'make all' would run, without running them: snakemake -n all"
	@echo "make report   one HTML report of a finished run (figures, tables, notebooks): results/smoke/report.html"
	@echo "make reference  render the notebooks and claims from the committed records in reference/ (no training)"
	@echo "make reference-export  copy a finished run's records to reference/<profile>/ (PROFILE=$(PROFILE))"
	@echo "make lab      open the notebooks in JupyterLab"
	@echo "make test     the test suite (pytest)"
	@echo "make bench    performance benchmarks (benchmarks/README.md)"
	@echo "make lint     snakemake --lint and a dry run"
	@echo "make install  create .venv and install the package with its dev extras"
	@echo "make clean    delete the smoke and test profiles' results and figures"
	@echo "Variables: CORES=$(CORES) PYTHON=$(PYTHON) VENV=$(VENV) SNAKEFLAGS='...' (extra snakemake flags of all and dry-run)"

clean:
	rm -rf results/smoke results/test figures/smoke figures/test .snakemake
