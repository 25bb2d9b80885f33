# nnstudy image: the `nnstudy` command (worker) and, with its entrypoint overridden, the MLflow
# tracking server (see docker-compose.yml).
#
#   docker build -t nnstudy:cpu .                              # TensorFlow for CPUs (default)
#   docker build --build-arg DEVICE=gpu -t nnstudy:gpu .       # TensorFlow with CUDA (NVIDIA GPUs)
#   docker run --rm nnstudy:cpu run studies/pass_fail.toml --storage postgresql://... --tracking-uri http://...
#
# BASE_IMAGE: any image with Python >= 3.11 whose `python` and `pip` install system-wide (the public
# python:3.11-slim by default). Without a registry, docker/base-image.sh makes one from Debian's packages:
#   docker/base-image.sh && docker build --network host --build-arg BASE_IMAGE=nnstudy-base:bookworm -t nnstudy:cpu .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# cpu: pyproject's dependencies as they are (tensorflow-cpu on x86_64).
# gpu: tensorflow[and-cuda] (same version range) instead; CUDA/cuDNN come as pip wheels, so the host
#      needs only the NVIDIA driver and the NVIDIA Container Toolkit.
ARG DEVICE=cpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MPLBACKEND=Agg

# An unprivileged user; /app (the working directory: a default SQLite store would go to /app/mlruns)
# and /mlartifacts (the MLflow server's artifact volume: a new named volume takes the owner of the
# folder it is mounted on) belong to it.
RUN groupadd --gid 1000 nnstudy \
    && useradd --create-home --uid 1000 --gid 1000 --no-log-init nnstudy \
    && mkdir -p /app /mlartifacts \
    && chown nnstudy:nnstudy /app /mlartifacts

# Dependencies first, in their own layer: editing nnstudy's code does not reinstall TensorFlow.
# docker/requirements.py turns pyproject's dependencies into the list for DEVICE (and rejects any
# other DEVICE). Both PostgreSQL drivers: SQLAlchemy >= 2.1 opens postgresql:// URLs with psycopg
# (3), older SQLAlchemy with psycopg2; Optuna and MLflow use whichever SQLAlchemy picks.
COPY pyproject.toml docker/requirements.py /tmp/nnstudy-build/
RUN python /tmp/nnstudy-build/requirements.py "$DEVICE" /tmp/nnstudy-build/pyproject.toml \
        > /tmp/nnstudy-build/requirements.txt \
    && cat /tmp/nnstudy-build/requirements.txt \
    && pip install --no-cache-dir -r /tmp/nnstudy-build/requirements.txt \
        "psycopg[binary]>=3.2" "psycopg2-binary>=2.9"

# The project itself, without dependencies (installed above), then a smoke test of the entry point
# and the drivers. The source copy is removed: the installed package is what runs.
COPY pyproject.toml README.md /tmp/nnstudy-src/
COPY nnstudy /tmp/nnstudy-src/nnstudy
RUN pip install --no-cache-dir --no-deps /tmp/nnstudy-src \
    && rm -rf /tmp/nnstudy-src /tmp/nnstudy-build \
    && nnstudy --version \
    && python -c "import psycopg, psycopg2"

WORKDIR /app
# The study specs (and the CSV they use); run your own with a bind mount, e.g. -v "$PWD/my:/app/my:ro".
COPY studies ./studies

# The nnstudy user, by number (so that a runtime can tell it is not root).
USER 1000:1000
ENTRYPOINT ["nnstudy"]
CMD ["--help"]
