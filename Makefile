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

# pyproject.toml holds compatible ranges; constraints.txt the exact versions `make test` is run with.
# torch first, pinned, the CPU build (2.13.0+cpu, from PyTorch's CPU index; a plain PyPI torch is a
# CUDA build): `torch==2.13.0` accepts the +cpu wheel, which pip prefers over PyPI's 2.13.0.
# (--retries 1: where that index cannot be reached and the wheel lies on disk, as on the CI machine,
# pip's default 5 retries per package page cost ~80 s.)
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q torch==2.13.0 -c constraints.txt --extra-index-url $(TORCH_INDEX) --retries 1
	$(BIN)/pip install -q -e '.[widgets,notebook,test,nets,cluster]' -c constraints.txt
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
	$(BIN)/pip install -q -e '.[bench]' -c constraints.txt
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(DEMO_DIR)
