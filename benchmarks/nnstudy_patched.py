"""``nnstudy`` with what-if changes applied at run time, for whatif.py (nnstudy's files are untouched).

    NNSTUDY_PATCHES=freeze,single-gc,no-report .venv/bin/python benchmarks/nnstudy_patched.py run SPEC ...

- ``freeze``: ``gc.collect(); gc.freeze()`` once when ``study.optimize`` starts, so the objects of the
  imports, the data and the stores (about half a million) are not traversed by every later collection;
- ``single-gc``: ``study.optimize(gc_after_trial=False)``: one full collection per trial is left, the one in
  ``keras.backend.clear_session(free_memory=True)`` at the start of ``train()``;
- ``no-report``: skip the end-of-study report (``runner.log_report``: plots and parameter importances);
- ``unregister-gradients``: after each ``train()``, delete the ``CustomGradient-N`` entries that tracing
  added to TensorFlow's global gradient registry (``ops._gradient_registry``, private): each trace of the
  train step registers one (``tf.distribute``'s ``ReplicaContext.all_reduce`` is a ``@custom_gradient``)
  and its closure keeps the whole traced ``FuncGraph`` alive, so every trial's graphs leak otherwise.

``NNSTUDY_PRUNER=asha|percentile25`` replaces the spec's pruner (used by ``pruning.py --whatif``):
``asha`` = ``SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)``; ``percentile25`` =
``PercentilePruner(25.0, n_startup_trials=5, n_warmup_steps=2)`` (keeps the top quarter at each epoch).
"""

from __future__ import annotations

import gc
import os
import sys

PATCHES = {p.strip() for p in os.environ.get("NNSTUDY_PATCHES", "").split(",") if p.strip()}
UNKNOWN = PATCHES - {"freeze", "single-gc", "no-report", "unregister-gradients"}
if UNKNOWN:
    raise SystemExit(f"NNSTUDY_PATCHES: unknown {sorted(UNKNOWN)}; allowed: freeze, single-gc, no-report, "
                     "unregister-gradients")

import optuna  # noqa: E402

if PATCHES & {"freeze", "single-gc"}:
    _optimize = optuna.Study.optimize

    def optimize(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if "freeze" in PATCHES:
            gc.collect()
            gc.freeze()
        if "single-gc" in PATCHES:
            kwargs["gc_after_trial"] = False
        return _optimize(self, *args, **kwargs)

    optuna.Study.optimize = optimize  # type: ignore[method-assign]

if "no-report" in PATCHES:
    import nnstudy.runner

    nnstudy.runner.log_report = lambda *args, **kwargs: None

if "unregister-gradients" in PATCHES:
    import nnstudy.objective
    from tensorflow.python.framework import ops as _tf_ops

    _train = nnstudy.objective.train

    def train(*args, **kwargs):  # type: ignore[no-untyped-def]
        registry = _tf_ops._gradient_registry._registry
        before = set(registry)
        try:
            return _train(*args, **kwargs)
        finally:
            for key in set(registry) - before:
                if key.startswith("CustomGradient-"):
                    del registry[key]

    nnstudy.objective.train = train

PRUNER = os.environ.get("NNSTUDY_PRUNER")
if PRUNER:
    import nnstudy.runner

    def make_pruner(spec):  # type: ignore[no-untyped-def]
        if PRUNER == "asha":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
        if PRUNER == "percentile25":
            return optuna.pruners.PercentilePruner(25.0, n_startup_trials=5, n_warmup_steps=2)
        raise SystemExit(f"NNSTUDY_PRUNER={PRUNER!r}; allowed: asha, percentile25")

    nnstudy.runner.make_pruner = make_pruner

from nnstudy.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
