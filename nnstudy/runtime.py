"""Process-wide settings, set once by whoever owns the process: the CLI and worker processes.

The library itself changes no global state; a notebook user may call :func:`configure` too,
to get the same quiet output as the command line.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

#: environment defaults (a value already set by the user wins)
ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's C++ lines (absl, oneDNN, tf.data graph notices); errors still raise
    "GIT_PYTHON_REFRESH": "quiet",  # MLflow asks git for the source version
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # a tracking server that stops answering costs seconds, not minutes of retries: records are kept for `sync`
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    # a process takes GPU memory as it needs it: the parent's model check leaves the GPUs to the workers
    "TF_FORCE_GPU_ALLOW_GROWTH": "true",
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # read when MLflow is imported: no "Creating initial database tables"
}


def thread_env(threads: int) -> dict[str, str]:
    """Environment limiting TensorFlow, JAX/XLA and BLAS to ``threads`` threads."""
    n = str(max(1, threads))
    return {"TF_NUM_INTRAOP_THREADS": n, "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": n,
            "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n,
            "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                         f"intra_op_parallelism_threads={n}"}


def training_threads() -> int:
    """The threads this process's training uses: what ``thread_env`` set (a worker), else every core it may use."""
    set_by = os.environ.get("TF_NUM_INTRAOP_THREADS", "")
    return int(set_by) if set_by.isdigit() and int(set_by) > 0 else len(os.sched_getaffinity(0))


def configure(backend: str | None = None, *, import_keras: bool = False, backend_field: str = "--backend") -> None:
    """Quiet logging and start-up noise, and choose the Keras backend before Keras is imported.

    Args:
        backend: ``tensorflow``, ``jax`` or ``torch``; sets ``KERAS_BACKEND`` (an existing value is
            kept when ``None``; defaults to ``tensorflow``).
        import_keras: import TensorFlow now with its start-up notices silenced (commands that train
            or predict); read-only commands leave it ``False`` and never load it.
        backend_field: what chose the backend, for the message when it is not installed.
    """
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    if backend is not None:
        check_backend(backend, backend_field)
        os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    warnings.filterwarnings("ignore", message=".*experimental.*")
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # if MLflow was imported already
    # its tracebacks of database errors it raises again (a full disk, a lock): nnstudy reports those itself
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    import optuna  # its logger sets itself to INFO when first used: set the level through optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if import_keras:
        _import_tensorflow_quietly()
        logging.getLogger("tensorflow").setLevel(logging.ERROR)  # "tf.function retracing" warnings


def freeze_imported(*modules: str) -> None:
    """Import ``modules``, then move every object alive (what the imports made: modules, classes, functions)
    out of the garbage collector's reach (``gc.freeze``), for a short command that is about to make many
    objects -- ``nnstudy trials`` or ``report`` reading a thousand trials makes some 30,000 -- each full
    collection of which would otherwise walk every imported object again (a second at a thousand trials).
    Garbage made afterwards is collected as before. Process-wide: only the process's owner (the CLI) calls it."""
    import gc
    import importlib

    for name in modules:
        importlib.import_module(name)
    gc.freeze()


#: the package each Keras backend needs, and how to install it
BACKEND_PACKAGES = {"tensorflow": ("tensorflow", "pip install nnstudy (TensorFlow comes with it)"),
                    "jax": ("jax", 'pip install "nnstudy[jax]"'), "torch": ("torch", 'pip install "nnstudy[torch]"')}


def check_backend(backend: str, field: str = "--backend") -> None:
    """Refuse (exit 2) a Keras backend whose package is not installed, naming what to install."""
    import importlib.util

    from nnstudy.errors import UserInputError

    package, install = BACKEND_PACKAGES.get(backend, (backend, ""))
    if importlib.util.find_spec(package) is None:
        installed = [b for b, (p, _) in BACKEND_PACKAGES.items() if importlib.util.find_spec(p) is not None]
        raise UserInputError(f"{field}: {backend!r} needs the package {package!r}, which is not installed; allowed: "
                             f"an installed backend ({', '.join(installed) or 'none'}), or {install}")


def _import_tensorflow_quietly() -> None:
    """TensorFlow's C++ core prints its oneDNN notice before its log level is read, so stderr is
    pointed at /dev/null while it is imported (an import error still raises normally)."""
    if os.environ.get("KERAS_BACKEND") != "tensorflow" or "tensorflow" in sys.modules:
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
