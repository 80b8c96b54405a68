# The two commands of the README: `make run` and `make test`. Both set up first.
PYTHON ?= python3
VENV ?= .venv
SUITE ?= default
ARGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kernelmark-installed

.PHONY: setup run test smoke clean browser

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml scripts/setup-venv.sh
	PYTHON=$(PYTHON) VENV=$(VENV) sh scripts/setup-venv.sh
	touch $(STAMP)

# Run the default suite on this machine (its GPU if it has one, else the CPU) and print the table.
run: setup
	$(PY) -m kernelmark run --suite $(SUITE) $(ARGS)

# The tests: no GPU needed (Triton kernels run in the Triton interpreter).
test: setup browser
	$(PY) -m pytest -q $(ARGS)

# The HTML report's test renders the page in headless Chromium: install Debian's package
# where it is missing and we may (root with apt-get); otherwise that one test is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "make: chromium not installed; the HTML browser test will be skipped"

smoke: setup
	$(PY) -m kernelmark run --suite smoke $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
