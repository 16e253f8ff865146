# The two commands: `make demo` runs a real batch end to end; `make test` runs the whole test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: demo test mypy bench system-deps clean
MOCKOON_VERSION := 9.9.0
MOCKOON := .tools/mockoon/node_modules/.bin/mockoon-cli

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
	@$(MAKE) --no-print-directory $(MOCKOON)

# The Mockoon tests run the real Mockoon CLI (npm), installed into .tools/mockoon, never globally; Debian's nodejs
# and npm are installed first where they are missing (as root). PocketBase comes from PyPI with the test extras.
$(MOCKOON):
	@command -v npm >/dev/null 2>&1 || { \
		if [ "$$(id -u)" -ne 0 ]; then echo "npm is missing, and this is not root: the Mockoon tests will skip" >&2; exit 0; fi; \
		echo "installing nodejs npm"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	@if command -v npm >/dev/null 2>&1; then \
		echo "installing @mockoon/cli $(MOCKOON_VERSION) into .tools/mockoon"; \
		mkdir -p .tools/mockoon && npm install --prefix .tools/mockoon --no-audit --no-fund --loglevel=error \
			@mockoon/cli@$(MOCKOON_VERSION) >/dev/null; \
	fi

demo: $(INSTALLED)
	$(BIN)/python -m prefect_restful_etl.deployments.demo

# Lint, format and types are part of the tests: CI keeps them clean.
test: $(INSTALLED) system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) --no-print-directory mypy
	$(BIN)/python -m pytest

# mypy cannot follow the editable install's package-dir mapping: it checks the import package through a tree of
# symlinks, build/mypy/prefect_restful_etl/<folder> -> the folder (configured in pyproject.toml's [tool.mypy]).
MYPY_TREE := build/mypy/prefect_restful_etl
mypy: $(INSTALLED)
	@mkdir -p $(MYPY_TREE)
	@for folder in blocks tasks flows deployments; do ln -sfn ../../../$$folder $(MYPY_TREE)/$$folder; done
	cd build/mypy && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p prefect_restful_etl

bench: $(INSTALLED)
	$(BIN)/python -m benchmarks.bench_extract --records 50000

clean:
	rm -rf $(VENV) .restful-etl .pytest_cache .tools
