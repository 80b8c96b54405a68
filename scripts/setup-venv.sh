#!/bin/sh
# Create the virtual environment that `make run` and `make test` use, and install
# kernelmark into it with its dependencies from setup.cfg.
#
# torch: if the Python that creates the venv already has torch (a CUDA or ROCm build,
# say), the venv is made with --system-site-packages so that build is kept and used.
# Otherwise torch==2.13.0 is installed first; on a machine with no GPU that should be a
# CPU build (pip picks one up from a local wheel directory if it is configured), and on
# a GPU machine pip's default build.
#
# PINS: extra requirements installed along with kernelmark's, e.g. the second test
# environment of `make test`: PINS='triton==3.6.* numpy>=2.4' VENV=.venv-triton36.
#
# TEST_MODELS=1 (the default): also flashinfer-bench's data models, pinned in
# scripts/flashinfer-bench-models.txt and installed --no-deps (its requirements would pull
# flashinfer-python), for the trace export's round-trip test. Without network that install
# fails soft: a line on stderr says so and the test skips; the rest of the setup stands.
set -euf   # -f: no globbing, so the '*' of a pin reaches pip as written
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
PINS=${PINS:-}
TEST_MODELS=${TEST_MODELS:-1}

test_models() {
    [ "$TEST_MODELS" = 1 ] || return 0
    if "$VENV/bin/python" -m pip install -q --no-deps -r scripts/flashinfer-bench-models.txt \
        && "$VENV/bin/python" -c "import flashinfer_bench.data" >/dev/null 2>&1; then
        echo "setup: flashinfer-bench's data models installed (the trace round-trip test runs)"
    else
        # Printed, never silent: in CI this line explains a skipped round-trip test.
        echo "setup: WARNING: could not install flashinfer-bench's data models" \
             "(scripts/flashinfer-bench-models.txt; no network?):" \
             "tests/reports/test_flashinfer_trace_export.py's round-trip tests will skip" >&2
    fi
}

if "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "setup: keeping the torch of $PY: $("$PY" -c 'import torch; print(torch.__version__)')"
    "$PY" -m venv --system-site-packages "$VENV"
    if "$PY" -c "import sys, torch; sys.exit(0 if getattr(torch.version, 'hip', None) else 1)"; then
        # ROCm torch ships Triton as pytorch-triton-rocm; pip would replace it with the
        # CUDA triton wheel to satisfy "triton". Install the other dependencies only,
        # through a requirements file: some carry environment markers ('; sys_platform ==
        # "linux"') that would not survive the shell's word splitting.
        reqfile="$VENV/kernelmark-deps.txt"
        "$VENV/bin/python" - > "$reqfile" <<'PYEOF'
import configparser
c = configparser.ConfigParser(); c.read("setup.cfg")
reqs = [r.strip() for r in c["options"]["install_requires"].splitlines() if r.strip()]
print("\n".join(r for r in reqs if not r.startswith(("torch", "triton"))))
PYEOF
        "$VENV/bin/python" -m pip install -q -r "$reqfile" pytest hypothesis $PINS
        "$VENV/bin/python" -m pip install -q --no-deps -e .
        test_models
        exit 0
    fi
else
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q "torch==2.13.0"
fi
"$VENV/bin/python" -m pip install -q $PINS -e ".[test]"
test_models
