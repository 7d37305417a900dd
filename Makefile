VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt
ARGS ?=

.PHONY: run test install install-test clean

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

## make test: set up .venv with the test extras and run the whole test suite
test: install-test
	$(PY) -m pytest tests $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
