# The two commands a newcomer needs: `make demo` and `make test`. Both set themselves up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Debian packages the full test suite drives for real: Chromium and ChromeDriver (the browser test), Prometheus,
# promtool, node_exporter and Alertmanager (the Prometheus tests). `make test` installs the missing ones when it runs
# as root with apt-get (as .ci/run does); elsewhere it says what is missing, and those tests skip naming the package
# (with CI=true they fail).
SYSTEM_PACKAGES := chromium chromium-driver prometheus prometheus-node-exporter prometheus-alertmanager
SYSTEM_BINARIES := chromium chromedriver prometheus promtool prometheus-node-exporter prometheus-alertmanager

.PHONY: setup system-packages demo stack stack-prometheus test lint format contract bench clean

setup: $(STAMP)

# torch first, pinned: the CPU wheel. A plain `torch` would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Trains on a small fleet, then keeps service, feeder and dashboard up until Ctrl-C (`tftmon demo --no-stack`:
# the pipeline only).
demo: setup
	$(BIN)/tftmon demo

# The live stack alone, over the current Production model.
stack: setup
	$(BIN)/tftmon stack

# A simulated fleet of node_exporters (and this machine's) in a real Prometheus with Alertmanager, a model trained
# from it, then service and dashboard watching it until Ctrl-C; all under demo-prometheus/ (Debian's prometheus,
# prometheus-node-exporter and prometheus-alertmanager needed).
stack-prometheus: setup
	$(BIN)/tftmon stack-prometheus

system-packages:
	@missing=""; for binary in $(SYSTEM_BINARIES); do command -v $$binary >/dev/null || missing="$$missing $$binary"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $(SYSTEM_PACKAGES) (missing:$$missing)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$(SYSTEM_PACKAGES) >/dev/null \
			|| echo "apt-get could not install them: the tests that need$$missing will skip (fail with CI=true)"; \
	else \
		echo "not installed:$$missing; the tests that need them skip (fail with CI=true): apt-get install $(SYSTEM_PACKAGES)"; \
	fi

test: setup lint system-packages
	$(BIN)/tftmon contract --markdown --expectations --check
	$(BIN)/mypy tftmon
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Regenerate docs/DATA_CONTRACT.md and expectations/ after changing tftmon/contract.py.
contract: setup
	$(BIN)/tftmon contract --markdown --expectations

bench: setup
	$(BIN)/python benchmarks/bench_simulate.py
	$(BIN)/python benchmarks/bench_validate.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache data reports logs mlruns mlartifacts mlflow.db demo-prometheus
