# The two commands: `make demo` runs a real batch end to end; `make test` runs the whole test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: demo test bench system-deps clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# Integration tests run a real redis-server on loopback; install it where it is missing (Debian, as root).
# Without root the Redis tests skip, saying so (under CI=true they fail instead).
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
		if [ "$$(id -u)" -eq 0 ]; then \
			echo "installing redis-server"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
		else \
			echo "redis-server is missing and this is not root: the Redis tests will skip" >&2; \
		fi; }

demo: $(INSTALLED)
	$(BIN)/python -m prefect_restful_etl.deployments.demo

test: $(INSTALLED) system-deps
	$(BIN)/python -m pytest

bench: $(INSTALLED)
	$(BIN)/python -m prefect_restful_etl.deployments.bench_extract --records 50000

clean:
	rm -rf $(VENV) .restful-etl .pytest_cache
