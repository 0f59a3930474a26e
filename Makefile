# gpuslo — every target sets up what it needs; a fresh machine needs nothing by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-stamp
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-deps test lint typecheck-tree wheel-check demo bench golden clean

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

# The folders are the subpackages of gpuslo (pyproject's package-dir); mypy names modules by
# path, so it reads them through a tree of links laid out as the installed wheel is.
FOLDERS := collectors slo_engine cost_model drift dashboards alerts runbooks remediation simulator tenants rollouts examples
typecheck-tree:
	@rm -rf build/typecheck && mkdir -p build/typecheck/gpuslo
	@for e in gpuslo/*; do ln -s ../../../$$e build/typecheck/gpuslo/; done
	@for f in $(FOLDERS); do ln -s ../../../$$f build/typecheck/gpuslo/$$f; done

lint: setup typecheck-tree
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

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
	$(BIN)/python bench/spec_load.py --size-mb 1 --repeat 3 --write docs/benchmarks.md
	$(BIN)/python bench/hostile_soak.py --seconds 60 --write docs/benchmarks.md
	$(BIN)/python bench/incidents.py --gpus 2504 --pages 20 --write docs/benchmarks.md
	$(BIN)/python bench/canary.py --seeds 20 --identical-seeds 200 --write docs/benchmarks.md
	$(BIN)/python bench/tenant_load.py --rate 200 --seconds 60 --write docs/benchmarks.md

# What a user installs: the wheel, non-editable, in a fresh virtualenv, run outside the checkout.
wheel-check: setup
	bash .ci/wheel-check

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info build dist
