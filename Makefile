# Two entry points for people: `make demo` (the main job) and `make test`.
# Both create the virtual environment, install what is needed and build the
# Cython extensions first, so they work on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.requirements-installed
PYTEST_ARGS ?=

.PHONY: all build test demo sysdeps bench clean

all: build

sysdeps:
	@sh tools/install-system-deps.sh

$(STAMP): requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

build: $(STAMP)
	$(PY) setup.py -q build_ext --inplace
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .

test: sysdeps build
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: sysdeps build
	$(VENV)/bin/misdtcp demo

clean:
	rm -rf build src/misdtcp/*.c src/misdtcp/*.so src/*.egg-info
