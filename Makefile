VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt
ARGS ?=
VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' src/biohsic/__init__.py)

.PHONY: run test test-all bench install install-test dist release-check clean

$(VENV)/bin/python:
	python3 -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) -e '.[all]'
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

## make run: set up .venv and run the main job (the rule on the bundled digits data)
run: install
	$(VENV)/bin/biohsic train $(ARGS)

## make test: set up .venv with the test extras and run the test suite (slow tests included; the
## rest of the exhaustive grids, marked exhaustive, only in make test-all)
test: install-test
	$(PY) -m pytest tests -m "not exhaustive" $(ARGS)

## make test-all: the whole test suite, the exhaustive grids included
test-all: install-test
	$(PY) -m pytest tests $(ARGS)

## make bench: samples/s of each engine (K, N, rate and leaky units), compile time, peak memory, and the
## paired ratio with the authors' code where /tmp/authors exists: benchmarks/results/engine_speed.{md,json}
bench: install
	$(PY) benchmarks/engine_speed.py $(ARGS)

## make dist: the wheel and the sdist in dist/
dist: install
	rm -rf dist
	$(PIP) build
	$(PY) -m build --outdir dist . >/dev/null
	ls dist

## make release-check: install the wheel into a fresh virtual environment and run it from elsewhere
release-check: dist
	rm -rf build/release-venv build/release-run && mkdir -p build/release-run
	python3 -m venv build/release-venv
	build/release-venv/bin/python -m pip install -q -c constraints.txt "$$(ls dist/biohsic-$(VERSION)-*.whl)[digits]"
	build/release-venv/bin/biohsic --version | grep -qx "biohsic $(VERSION)"
	cd build/release-run && ../release-venv/bin/python -c "import biohsic, sys; assert 'site-packages' in biohsic.__file__, biohsic.__file__"
	cd build/release-run && ../release-venv/bin/python ../../examples/biohsic_exact.py --quick
	@echo "release check passed: biohsic $(VERSION) from its wheel"

clean:
	rm -rf $(VENV) runs .pytest_cache dist build
