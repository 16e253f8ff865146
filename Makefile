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

# Integration tests run a real redis-server on loopback, and a private PostgreSQL server (initdb and postgres, on
# PATH or under /usr/lib/postgresql/*/bin) that they start themselves: install what is missing (Debian, as root).
# Debian's postgresql package would create a "main" cluster and start it; a createcluster.d drop-in tells it to
# create none, so there is no cluster service to start. Without root the Redis or PostgreSQL tests skip, saying
# so (under CI=true they fail instead).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" -ne 0 ]; then \
		echo "missing:$$missing, and this is not root: the tests that need them will skip" >&2; exit 0; \
	fi; \
	case "$$missing" in *postgresql*) \
		mkdir -p /etc/postgresql-common/createcluster.d && \
		echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/restful-etl-no-main-cluster.conf;; \
	esac; \
	echo "installing$$missing"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null

demo: $(INSTALLED)
	$(BIN)/python -m prefect_restful_etl.deployments.demo

# Lint and format are part of the tests: CI keeps them clean.
test: $(INSTALLED) system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

bench: $(INSTALLED)
	$(BIN)/python -m benchmarks.bench_extract --records 50000

clean:
	rm -rf $(VENV) .restful-etl .pytest_cache
