# The two commands of the README: `make run` and `make test`. Both set up first.
PYTHON ?= python3
VENV ?= .venv
SUITE ?= default
ARGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kernelmark-installed

.PHONY: setup run test smoke clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml scripts/setup-venv.sh
	PYTHON=$(PYTHON) VENV=$(VENV) sh scripts/setup-venv.sh
	touch $(STAMP)

# Run the default suite on this machine (its GPU if it has one, else the CPU) and print the table.
run: setup
	$(PY) -m kernelmark run --suite $(SUITE) $(ARGS)

# The tests: no GPU needed (Triton kernels run in the Triton interpreter).
test: setup
	$(PY) -m pytest -q $(ARGS)

smoke: setup
	$(PY) -m kernelmark run --suite smoke $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
