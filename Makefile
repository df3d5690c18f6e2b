# Two entry points for people: `make demo` (the main job) and `make test`.
# Both create the virtual environment, install what is needed and build the
# Cython extensions first, so they work on a fresh machine.
#
#   make test      the whole suite (derandomised hypothesis, slowest tests
#                  listed), then the sdist and wheel checked in a fresh venv
#   make demo      stock iperf3 client -> misdtcp serve, in a private namespace
#   make explore   the property tests with random draws and 20x the examples
#   make bench     installs the benchmarks' plotting stack; see bench/README.md
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: all build test check-package explore demo sysdeps bench clean

all: build

sysdeps:
	@PYTHON=$(PYTHON) sh tools/install-system-deps.sh

$(VENV)/.stamp-build: requirements-build.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-build.txt
	touch $@

# extensions compile in parallel, one job per CPU (setup.py)
build: $(VENV)/.stamp-build
	$(PY) setup.py -q build_ext --inplace
	$(PY) -m pip install -q --no-build-isolation -e .

$(VENV)/.stamp-test: $(VENV)/.stamp-build pyproject.toml
	$(PY) -m pip install -q --no-build-isolation -e ".[test]"
	@$(PY) -m pip install -q "atheris>=2.3" 2>/dev/null || \
		echo "misdtcp: atheris could not be installed here; the coverage-guided fuzzing test will be skipped"
	touch $@

$(VENV)/.stamp-demo: $(VENV)/.stamp-build pyproject.toml
	$(PY) -m pip install -q --no-build-isolation -e ".[demo]"
	touch $@

$(VENV)/.stamp-bench: $(VENV)/.stamp-build pyproject.toml
	$(PY) -m pip install -q --no-build-isolation -e ".[bench]"
	touch $@

test: sysdeps build $(VENV)/.stamp-test
	$(PY) -m pytest -q --hypothesis-profile=ci --durations=20 $(PYTEST_ARGS)
	$(MAKE) --no-print-directory check-package

# the sdist builds, a wheel builds from it, and both install into a fresh venv
check-package: $(VENV)/.stamp-build
	@PYTHON=$(PYTHON) sh tools/check-package.sh $(PY)

explore: sysdeps build $(VENV)/.stamp-test
	HYPOTHESIS_PROFILE=explore MISDTCP_EXAMPLES_SCALE=$${MISDTCP_EXAMPLES_SCALE:-20} \
		$(PY) -m pytest -q -m hypothesis --hypothesis-profile=explore $(PYTEST_ARGS)

demo: sysdeps build $(VENV)/.stamp-demo
	$(VENV)/bin/misdtcp demo

bench: build $(VENV)/.stamp-bench
	@echo "misdtcp: the benchmarks' stack is installed; bench/README.md has the commands"

clean:
	rm -rf build dist src/*.egg-info
	find src/misdtcp -name '*.c' -o -name '*.so' | xargs rm -f
