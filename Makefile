# gpuslo — every target sets up what it needs; a fresh machine needs nothing by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-stamp
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-deps test lint demo bench golden clean

setup: $(STAMP) system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Prometheus, promtool, Alertmanager and node_exporter are real Debian packages; tests start them.
system-deps:
	@missing=""; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null || missing="$$missing prometheus-alertmanager"; \
	command -v prometheus-node-exporter >/dev/null || missing="$$missing prometheus-node-exporter"; \
	if [ -n "$$missing" ]; then \
	  echo "installing from Debian packages:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

test: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Until the twin lands: the agent on the sim backend for a few seconds, then one scrape.
# The whole loop on loopback (twin, agents, Prometheus, Alertmanager, remediation hook), about
# five minutes; the report lands in demo-report/index.html.
demo: setup
	$(BIN)/gpuslo demo --out demo-report

# Rewrite tests/golden/* from the current output; review the diff before committing.
golden: setup
	$(BIN)/pytest -q --regen-golden

bench: setup
	$(BIN)/python bench/agent_scrape.py --write docs/benchmarks.md
	$(BIN)/python bench/rules_cost.py --interval 60 --cycles 5 --write docs/benchmarks.md
	$(BIN)/python bench/webhook_load.py --rate 200 --seconds 60 --write docs/benchmarks.md
	$(BIN)/python bench/otlp_ingest.py --rounds 40 --scrapes 300 --write docs/benchmarks.md
	$(BIN)/python bench/evaluator.py --write docs/benchmarks.md
	$(BIN)/python bench/correlation.py --seeds 10 --write docs/benchmarks.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
