"""Where does the per-trial memory growth come from? RSS per trial of in-process training loops.

    .venv/bin/python benchmarks/memory_probe.py [--trials 60] [--mode train|keras-tfdata|keras-numpy|all]

Each mode runs in its own subprocess, on the pass_fail data (nnstudy's prepare), max_epochs 3,
configurations drawn like a random search, and prints the RSS (VmRSS) after every trial:

- ``train``: ``nnstudy.training.train`` alone (nnstudy's input pipeline, early stopping, callback;
  no Optuna, no MLflow);
- ``keras-tfdata``: a plain Keras loop with the same tf.data pipeline (cache once, shuffle/batch per trial,
  steps_per_execution), ``clear_session()`` per trial;
- ``keras-numpy``: a plain Keras loop on numpy arrays (the peer's input path), ``clear_session()``;
- ``train-unregister``: ``train`` plus, after each trial, deleting the ``CustomGradient-N`` entries the trial
  added to TensorFlow's global gradient registry (``ops._gradient_registry``), which keep its graphs alive.

``--objects`` instead counts the gc-tracked Python objects by type after trial 10 and after the last
trial of the ``train`` loop (after a full collection) and prints the types that grew most.

If the plain loops grow as much as ``memory.py`` measures for ``nnstudy run``, the growth is
TensorFlow/Keras's, per model built in one process; if only ``train`` grows, it is nnstudy's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, child_env, command_line, md_table, write_section


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def config(rng: random.Random) -> dict:
    return {"learning_rate": 10 ** rng.uniform(-4, -1), "optimizer": rng.choice(["sgd", "adam", "rmsprop", "adagrad"]),
            "batch_size": rng.choice([16, 32, 64, 128]), "dropout": rng.uniform(0, 0.5), "depth": rng.randint(0, 3),
            "units": rng.choice([8, 16, 32, 64]), "activation": rng.choice(["relu", "tanh", "sigmoid"])}


def count_objects(trials: int, early: int) -> None:
    """Which Python object types survive a trial: counts after trial ``early`` and after the last."""
    import collections
    import gc

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from nnstudy.data import prepare
    from nnstudy.spec import load_spec
    from nnstudy.training import InputPipeline, train

    spec = load_spec(ROOT / "studies" / "pass_fail.toml", overrides={"train": {"max_epochs": 3}})
    data = prepare(spec)
    pipeline = InputPipeline(data)
    tf.config.experimental.enable_op_determinism()
    rng = random.Random(0)
    snaps = {}
    for i in range(trials):
        train(data, config(rng), spec.train, metric="val_loss", direction="minimize", seed=i, pipeline=pipeline)
        if i + 1 in (early, trials):
            gc.collect()
            objects = gc.get_objects()
            snaps[i + 1] = (collections.Counter(type(o).__name__ for o in objects), len(objects), rss_mib())
            del objects
    (c0, n0, r0), (c1, n1, r1) = snaps[early], snaps[trials]
    print(f"after trial {early}: {n0} objects, {r0:.0f} MiB; after trial {trials}: {n1} objects, {r1:.0f} MiB")
    print("grew most:", ", ".join(f"{k} +{v}" for k, v in (c1 - c0).most_common(12)))


def child(mode: str, trials: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import math

    import keras
    import tensorflow as tf

    from nnstudy.data import prepare
    from nnstudy.spec import load_spec
    from nnstudy.training import InputPipeline, train

    spec = load_spec(ROOT / "studies" / "pass_fail.toml", overrides={"train": {"max_epochs": 3}})
    data = prepare(spec)
    pipeline = InputPipeline(data)
    tf.config.experimental.enable_op_determinism()
    rng = random.Random(0)
    ds = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train)).cache()
    val = tf.data.Dataset.from_tensor_slices((data.x_val, data.y_val)).cache().batch(4096)
    from tensorflow.python.framework import ops as tf_ops

    registry = tf_ops._gradient_registry._registry
    out = []
    for i in range(trials):
        params = config(rng)
        if mode in ("train", "train-unregister"):
            before = set(registry)
            train(data, params, spec.train, metric="val_loss", direction="minimize", seed=i, pipeline=pipeline)
            if mode == "train-unregister":
                for key in set(registry) - before:
                    if key.startswith("CustomGradient-"):
                        del registry[key]
        else:
            keras.backend.clear_session()
            keras.utils.set_random_seed(i)
            layers = [keras.Input((data.n_features,))]
            for _ in range(params["depth"]):
                layers += [keras.layers.Dense(params["units"], activation=params["activation"]),
                           keras.layers.Dropout(params["dropout"])]
            model = keras.Sequential([*layers, keras.layers.Dense(1, activation="sigmoid")])
            bs = params["batch_size"]
            spe = max(1, min(50, math.ceil(len(data.x_train) / bs))) if mode == "keras-tfdata" else 1
            model.compile(keras.optimizers.get({"class_name": params["optimizer"],
                                                "config": {"learning_rate": params["learning_rate"]}}),
                          "binary_crossentropy", metrics=["accuracy"], steps_per_execution=spe)
            stop = keras.callbacks.EarlyStopping(patience=10, restore_best_weights=True)
            if mode == "keras-tfdata":
                model.fit(ds.shuffle(len(data.x_train), seed=i).batch(bs).prefetch(tf.data.AUTOTUNE),
                          validation_data=val, epochs=3, verbose=0, callbacks=[stop])
            else:
                model.fit(data.x_train, data.y_train, batch_size=bs, validation_data=(data.x_val, data.y_val),
                          epochs=3, verbose=0, callbacks=[stop])
            model.evaluate(val, verbose=0)
        out.append(rss_mib())
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description="RSS per trial of in-process training loops")
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--early", type=int, default=10)
    parser.add_argument("--mode", default="all",
                        choices=["all", "train", "keras-tfdata", "keras-numpy", "train-unregister"])
    parser.add_argument("--objects", action="store_true", help="count surviving Python objects by type (train loop)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.objects:
        count_objects(args.trials, args.early)
        return
    if args.child:
        child(args.mode, args.trials)
        return
    modes = ["train", "keras-tfdata", "keras-numpy", "train-unregister"] if args.mode == "all" else [args.mode]
    rows = []
    for mode in modes:
        start = time.time()
        proc = subprocess.run([sys.executable, __file__, "--child", "--mode", mode, "--trials", str(args.trials)],
                              env=child_env(), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
        rss = json.loads(proc.stdout.strip().splitlines()[-1])
        early, late = rss[args.early - 1], rss[-1]
        slope = (late - early) / (len(rss) - args.early) * 1024
        rows.append([mode, f"{early:.0f}", f"{late:.0f}", f"{late / early:.3f}", f"{slope:.0f}",
                     f"{time.time() - start:.0f}"])
        print(mode, rows[-1], flush=True)
    objects = ""
    if args.mode in ("all", "train"):
        proc = subprocess.run([sys.executable, __file__, "--objects", "--trials", "40", "--early", str(args.early)],
                              env=child_env(), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"--objects failed:\n{proc.stderr[-3000:]}")
        lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith(("after trial", "grew most"))]
        objects = ("\nSurviving Python objects, `train` loop, 40 trials (`--objects`, counted after a full "
                   "`gc.collect()`):\n\n" + "\n".join(f"- {ln}" for ln in lines) + "\n")
        print(objects, flush=True)
    table = md_table(["loop", f"RSS after trial {args.early}, MiB", f"after trial {args.trials}, MiB", "ratio",
                      "KiB per trial", "wall s"], rows)
    text = f"""## Memory probe: which layer grows?

Command: `{command_line()}`. In-process loops of {args.trials} short trials (pass_fail data, 3 epochs, random
configurations), each mode in its own process, no Optuna and no MLflow: `train` = nnstudy.training.train;
`keras-tfdata` = plain Keras with the same tf.data pipeline; `keras-numpy` = plain Keras on numpy arrays;
`train-unregister` = `train` + deleting, after each trial, the `CustomGradient-N` entries it added to
TensorFlow's global gradient registry (`tensorflow.python.framework.ops._gradient_registry`).

{table}
{objects}"""
    print(text)
    if not args.no_write:
        write_section("memory-probe", text)


if __name__ == "__main__":
    main()
