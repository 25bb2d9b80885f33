#!/usr/bin/env bash
# GPU check (issue 13, goal 6): the same fixed trials with --gpus all --trials-per-gpu 1,2,4 and on the CPU,
# JAX backend; prints one table (variant, trials, seconds, trials/minute, ratio vs CPU). Under 5 minutes on a
# machine with an NVIDIA GPU. Run from anywhere:
#
#   bash benchmarks/gpu_check.sh                 # arguments go to benchmarks/gpu_check.py (--help)
#   OUT=/some/folder bash benchmarks/gpu_check.sh   # keep the table, results.json and the logs there
#
# Python: $PYTHON, else .venv/bin/python, else python3. A machine without network and without nnstudy's
# dependencies (keras, optuna, mlflow, ...) installs wheels carried in .whl/ (if that folder exists) into
# /tmp/site first; nnstudy itself runs from this checkout (PYTHONPATH). Make .whl/ on a machine with network:
#
#   bash benchmarks/gpu_check.sh --fetch-wheels  # the wheels below for CPython 3.12 manylinux x86_64 (33 MB)
#
# They are what such a machine (Python 3.12, JAX with CUDA, numpy, pandas, pyarrow, scikit-learn, rich, click,
# matplotlib, h5py, ... but no TensorFlow, Keras, Optuna or MLflow) lacks: mlflow-skinny instead of mlflow (the
# sqlite tracking store works with it; cryptography is for its model registry tables).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
WHEELS="keras==3.15.1 namex==0.1.0 optree==0.20.0 optuna==5.0.0 alembic==1.20.1 sqlalchemy==2.1.9 mako==1.4.3
colorlog==6.12.0 mlflow-skinny==3.17.2 mlflow-tracing==3.17.2 pydantic==2.14.4 pydantic-core==2.50.5
annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 cachetools==7.3.3 sqlparse==0.6.1
opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-proto==1.45.2
opentelemetry-semantic-conventions==0.66b2 importlib-metadata==9.1.0 plotly==7.1.0 databricks-sdk==0.162.0
fastapi==0.165.0 starlette==1.10.0 cryptography==50.0.2 cffi==2.1.1 pycparser==3.12"
if [ "${1:-}" = "--fetch-wheels" ]; then
    mkdir -p .whl
    # shellcheck disable=SC2086
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $WHEELS
    exit
fi
export KERAS_BACKEND=jax   # (the machine may have no TensorFlow, which Keras would import by default)
if ! "$PYTHON" -c "import keras, optuna, mlflow" 2>/dev/null && [ -d .whl ]; then
    echo "[gpu_check] installing the wheels of .whl/ into /tmp/site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PYTHON" -c "import importlib.metadata as m; m.version('nnstudy')" 2>/dev/null; then
    # nnstudy runs from this checkout; its package metadata (which a kept model's requirements read) goes to /tmp/site
    echo "[gpu_check] installing nnstudy's metadata into /tmp/site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site . \
        || echo "[gpu_check] warning: could not install nnstudy; kept models will not be logged"
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" benchmarks/gpu_check.py ${OUT:+--out "$OUT"} "$@"
