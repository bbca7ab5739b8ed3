PY ?= python3.11
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-all demo demo-gpu install clean-demo

$(STAMP): requirements.txt setup.py
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements.txt
	$(VPY) -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# the default run: unit tests and short end-to-end runs (CI); `make test-all` adds the slow end-to-end tests
test: $(STAMP)
	$(VPY) -m pytest -x -q -m "not slow" tests

test-all: $(STAMP)
	$(VPY) -m pytest -x -q tests

demo: $(STAMP)
	$(VPY) opencood/tools/demo.py

# one CUDA GPU (sized for an H200); needs a CUDA build of torch and spconv-cu12x in the venv (README, GPU section)
demo-gpu: $(STAMP)
	$(VPY) opencood/tools/demo.py --device cuda --preset gpu
