# The two commands of the README: `make run` and `make test`. Both set up first.
PYTHON ?= python3
VENV ?= .venv
SUITE ?= default
ARGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kernelmark-installed
# The second test environment: the Triton of the GPU machines we measure on (3.6), with
# numpy >= 2.4, so that a kernel that breaks under their Triton fails the tests here.
TRITON36_VENV ?= .venv-triton36
TRITON36_PINS := triton==3.6.* numpy>=2.4
PY36 := $(TRITON36_VENV)/bin/python
STAMP36 := $(TRITON36_VENV)/.kernelmark-installed
# What runs under it: everything that launches a Triton kernel (the kernels' own tests
# and the ops' checks of their Triton backends).
TRITON36_TESTS ?= tests/kernels tests/ops tests/harness/test_aot_targets.py

.PHONY: setup setup-triton36 run test test-main test-triton36 smoke clean browser

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml scripts/setup-venv.sh
	PYTHON=$(PYTHON) VENV=$(VENV) sh scripts/setup-venv.sh
	touch $(STAMP)

setup-triton36: $(STAMP36)

# The stamp is written only once the venv really has triton 3.6 (a torch build that pins
# another Triton, kept with --system-site-packages, would otherwise go unnoticed).
$(STAMP36): setup.cfg pyproject.toml scripts/setup-venv.sh Makefile
	PYTHON=$(PYTHON) VENV=$(TRITON36_VENV) PINS='$(TRITON36_PINS)' sh scripts/setup-venv.sh
	$(PY36) -c "import sys, numpy, triton; v = triton.__version__; print('setup: $(TRITON36_VENV) has triton', v, 'numpy', numpy.__version__); sys.exit(0 if v.startswith('3.6.') else 'setup: $(TRITON36_VENV) needs triton 3.6, has ' + v)"
	touch $(STAMP36)

# Run the default suite on this machine (its GPU if it has one, else the CPU) and print the table.
run: setup
	$(PY) -m kernelmark run --suite $(SUITE) $(ARGS)

# The tests: no GPU needed (Triton kernels run in the Triton interpreter). All of them
# with the newest Triton (.venv), then the kernel tests again with triton 3.6.
# ARGS goes to the first run only.
test: test-main test-triton36

test-main: setup browser
	$(PY) -m pytest -q $(ARGS)

test-triton36: setup-triton36
	$(PY36) -m pytest -q $(TRITON36_TESTS)

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
	rm -rf $(VENV) $(TRITON36_VENV) build *.egg-info .pytest_cache
