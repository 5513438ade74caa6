# emkit — the two commands a newcomer needs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-data

.PHONY: demo test install system-deps bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned: it is the CPU build on disk; an unpinned torch pulls a CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[widgets,notebook,test,nets]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

# Debian packages the browser and napari tests need (chromium, Xvfb, Qt's xcb libraries).
system-deps:
	@bash .ci/system-deps.sh

demo: install
	$(BIN)/emkit demo $(DEMO_DIR)

test: install system-deps
	$(BIN)/python -m pytest -q --timeout=900

# benchmarks measure against peers (waterz builds C++ on install, so it is not in `make test`)
bench: install
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(DEMO_DIR)
