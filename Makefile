# The two commands of the README: `make demo` and `make test`. Each does all of its
# own set-up (virtual environment, Python packages, Debian packages), idempotently.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_ARGS ?=

.PHONY: setup demo test test-fast bench stack-up stack-down clean

setup: $(STAMP) apt-packages

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

# Prometheus and promtool come from Debian (alert rules, their unit tests, live alerts);
# so does Chromium, the headless browser the dashboard tests drive with Playwright
# (`playwright install` downloads its own browsers, which this project never does), and
# Mosquitto, the device gateway's MQTT broker (in /usr/sbin: not on a non-root PATH).
apt-packages:
	@if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1 \
	    || ! command -v chromium >/dev/null 2>&1 || ! PATH="$$PATH:/usr/sbin" command -v mosquitto >/dev/null 2>&1; then \
		echo "installing Debian packages: prometheus chromium mosquitto"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus chromium mosquitto >/dev/null; \
	fi
	@command -v promtool >/dev/null || { echo "promtool still missing after apt-get install prometheus" >&2; exit 1; }
	@command -v chromium >/dev/null || { echo "chromium still missing after apt-get install chromium" >&2; exit 1; }
	@PATH="$$PATH:/usr/sbin" command -v mosquitto >/dev/null || { echo "mosquitto still missing after apt-get install mosquitto" >&2; exit 1; }

demo: setup
	$(VENV)/bin/ecoretrofit demo $(DEMO_ARGS)

# The stack's default telemetry path (ECO_TELEMETRY_INGEST=sink), then the tests of the
# Kafka-engine path in a session whose stack runs that path.
test: setup
	$(PY) -m pytest -q --durations=15
	ECO_TELEMETRY_INGEST=kafka_engine $(PY) -m pytest -q --durations=15 -m "kafka_engine or both_ingest_paths"

# Unit tests only: no stack, seconds.
test-fast: setup
	$(PY) -m pytest -q -m "not integration"

bench: setup
	$(VENV)/bin/ecoretrofit bench

stack-up: setup
	$(VENV)/bin/ecoretrofit stack up --prometheus

stack-down:
	$(VENV)/bin/ecoretrofit stack down

clean: stack-down
	rm -rf .eco-data
