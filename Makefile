# FedHaem: `make demo` runs the whole platform locally; `make test` runs the test suite.
# Both create .venv and install everything on first use.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test test-fast deps browser clean-var lint-imports check-deploy

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[manager,dev]'
	$(PY) -m pip check
	@touch $(STAMP)

deps: $(STAMP)

# Debian's Chromium drives the browser tests; installed when we may (root), else they skip.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: browser tests will be skipped"; }

demo: $(STAMP)
	$(PY) manage.py demo

test: $(STAMP) browser lint-imports
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) -m pytest $(PYTEST_ARGS)

# The quick loop: no real Flower processes, no browser.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not e2e" $(PYTEST_ARGS)

# The layers of STYLE.md ([tool.importlinter] in pyproject.toml): no upward import, no cycle
# between packages, no web stack below the portal.
lint-imports: $(STAMP)
	$(VENV)/bin/lint-imports

check-deploy: $(STAMP)
	FEDHAEM_ENV=production SECRET_KEY=$$(head -c 48 /dev/urandom | base64) OIDC_RP_CLIENT_SECRET=x \
	  ALLOWED_HOSTS=fedhaem.example.org $(PY) manage.py check --deploy

clean-var:
	rm -rf var
