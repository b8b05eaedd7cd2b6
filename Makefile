# Two commands for a fresh clone: `make demo` and `make test`. Both create .venv if needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU wheel of torch 2.13.0 is what this pin takes; an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
EXTRAS := dev,onnxruntime,sklearn,torch,bench,plot
STATE_DIR ?= .tritonops/dev

.PHONY: install test demo demo-down lint clean system-deps

# Debian packages the tests run for real: prometheus (demand sources and rollout gates read it).
system-deps:
	@command -v prometheus >/dev/null 2>&1 || { \
		echo "installing Debian's prometheus (apt-get; needs root)" >&2; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]" "$(TORCH_PIN)"
	touch $@

install: $(BIN)/.installed

# The suite mostly waits on real servers (load average ~1 when run serially on 2 cores): 4 workers, each
# with its own local stack, and idle workers take tests from busy ones.
TEST_WORKERS ?= 4
test: $(BIN)/.installed system-deps
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

demo: $(BIN)/.installed
	PATH="$(abspath $(BIN)):$$PATH" STATE_DIR="$(STATE_DIR)" bash scripts/demo.sh

demo-down: $(BIN)/.installed
	$(BIN)/tritonops dev down --state-dir $(STATE_DIR)

lint: $(BIN)/.installed
	$(BIN)/ruff check tritonops tests
	$(BIN)/mypy tritonops

clean:
	-$(BIN)/tritonops dev down --state-dir $(STATE_DIR)
	rm -rf $(VENV) .tritonops .pytest_cache
