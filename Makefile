# Two entry points, as in the README: `make reproduce` (the main job) and `make test`.
# torch is pinned to the CPU wheel that lies on this kind of machine's disk; a bare `torch`
# would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
PROFILE ?= standard

.PHONY: reproduce test venv clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed

reproduce: venv
	$(BIN)/blindspots data fetch
	$(BIN)/blindspots reproduce szegedy2014 --profile $(PROFILE)

test: venv
	$(BIN)/blindspots data fetch
	$(BIN)/blindspots data fetch --dataset fashion-mnist
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info
