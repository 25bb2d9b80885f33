"""Worker processes: several processes (or GPU slots) running trials of one study.

``plan_workers`` decides the environment of each worker (threads per worker, the GPU it
sees); ``run_workers`` starts them as separate processes (forked from a parent that imported
TensorFlow without running it, else spawned, so each sets its Keras backend and device before
importing Keras: :func:`start_method`), shows one progress display for all of them
and stops them cleanly on Ctrl-C/SIGTERM. The parent hands out the study's new trials one at a
time, to whichever worker is free (:class:`TrialGrants`): the total is exact and no core waits
idle at the end while another worker still works through a share of its own. Processes on other
machines join the same study through a shared storage with ``nnstudy run SPEC --storage ...
--tracking-uri ...``.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nnstudy.contract import ATTR_FAIL_REASON, ATTR_PID
from nnstudy.errors import NnstudyError, UserInputError, is_disk_full
from nnstudy.runtime import thread_env

if TYPE_CHECKING:
    from nnstudy.context import StudyContext
    from nnstudy.progress import StudyProgress


@dataclass(frozen=True)
class WorkerPlan:
    """One worker process: its name and the environment it starts with."""

    name: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def device(self) -> str:
        """``gpu:<index>`` for a worker placed on a GPU, else ``cpu``."""
        gpu = self.env.get("CUDA_VISIBLE_DEVICES", "")
        return f"gpu:{gpu}" if gpu else "cpu"


def detect_gpus() -> list[str]:
    """GPU indices visible on this machine (``nvidia-smi -L``); empty when there is none."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


#: memory a CPU worker process is given room for when ``--workers auto`` decides how many to start (a
#: worker's TensorFlow runtime, the prepared data and a small model take ~0.6-1 GiB)
AUTO_WORKER_MEMORY = 1 << 30

#: new trials each worker of ``--workers auto`` must have at least: a worker costs ~7 CPU seconds to start
#: (a fresh Python importing TensorFlow, MLflow and Optuna) against 1-3 s for a small trial, so a study of
#: few trials finished sooner in one process on 2 cores (benchmarks/RESULTS.md: 7 trials 40 s with workers
#: vs 35 s without; 16 trials 53 s vs 61 s)
AUTO_TRIALS_PER_WORKER = 8


def auto_workers(n_trials: int, *, cores: int | None = None, gpus: list[str] | None = None,
                 available_memory: int | None = None) -> int:
    """How many worker processes ``--workers auto`` starts: one per core this process may use (its CPU
    affinity, as a container's cpuset limits it), at most one per :data:`AUTO_TRIALS_PER_WORKER` new trials
    and per GiB of available memory; 1 (trials in this process) on a machine with a GPU, where one process
    trains on it, with a single core, or for a study too short to pay for starting workers.

    Small Keras models use about one core each, so a study with several workers of one thread each
    runs its trials side by side; a trial's curve does not depend on the worker it runs in."""
    present = detect_gpus() if gpus is None else gpus
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    if present or cores <= 1 or n_trials < 2 * AUTO_TRIALS_PER_WORKER:
        return 1
    if available_memory is None:
        import psutil

        available_memory = int(psutil.virtual_memory().available)
    return max(1, min(cores, n_trials // AUTO_TRIALS_PER_WORKER, available_memory // AUTO_WORKER_MEMORY))


def resolve_workers(workers: int | str, n_trials: int) -> int:
    """``workers`` as a count: an integer >= 1 as it is, ``"auto"`` as :func:`auto_workers` decides."""
    if workers == "auto":
        return auto_workers(n_trials)
    if isinstance(workers, str):
        if not workers.strip().isdigit():
            raise UserInputError(f"--workers {workers}: allowed: auto or an integer >= 1")
        workers = int(workers)
    return workers


def plan_workers(workers: int = 1, *, gpus: list[str] | None = None, trials_per_gpu: int = 1,
                 available_gpus: list[str] | None = None, cpu_count: int | None = None) -> list[WorkerPlan]:
    """The worker processes to start.

    * ``workers == 1`` and no ``gpus``: one plan with an empty environment (run in-process).
    * ``workers > 1``: that many CPU workers, the cores shared out between them.
    * ``gpus`` (indices, or ``["all"]``): ``trials_per_gpu`` workers per GPU, each seeing only its
      GPU (``CUDA_VISIBLE_DEVICES``), growing its memory on demand and, with several per GPU, taking
      at most its share of the GPU memory. With no GPU on the machine, falls back to ``workers`` CPU workers.
    """
    if workers < 1:
        raise UserInputError(f"--workers {workers}: allowed: an integer >= 1")
    if trials_per_gpu < 1:
        raise UserInputError(f"--trials-per-gpu {trials_per_gpu}: allowed: an integer >= 1")
    cores = cpu_count or os.cpu_count() or 1
    bad = [g for g in gpus or [] if not (g.isdigit() or g == "all")] + (["all"] if gpus and len(gpus) > 1 and
                                                                        "all" in gpus else [])
    if bad:
        raise UserInputError(f"--gpus {','.join(gpus or [])}: {bad[0]!r} is not a GPU; allowed: GPU indices such "
                             "as 0,1 (as nvidia-smi numbers them) or all")
    if gpus:
        present = detect_gpus() if available_gpus is None else available_gpus
        wanted = present if gpus == ["all"] else gpus
        missing = [g for g in wanted if g not in present]
        if present and missing:
            raise UserInputError(f"--gpus {','.join(gpus)}: GPU {missing[0]} does not exist; "
                                 f"allowed: {', '.join(present)} or all")
        if present:
            slots = [(g, k) for g in wanted for k in range(trials_per_gpu)]
            threads = max(1, cores // len(slots))
            fraction = f"{0.9 / trials_per_gpu:.2f}"
            return [WorkerPlan(name=f"gpu{g}-{k}", env={
                **thread_env(threads), "CUDA_VISIBLE_DEVICES": g, "TF_FORCE_GPU_ALLOW_GROWTH": "true",
                "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "XLA_PYTHON_CLIENT_MEM_FRACTION": fraction})
                for g, k in slots]
        print("warning: no GPU found; running on the CPU", file=sys.stderr)
    if workers == 1 and not gpus:
        return [WorkerPlan(name="main")]
    threads = max(1, cores // workers)
    return [WorkerPlan(name=f"cpu{i}", env={**thread_env(threads), "CUDA_VISIBLE_DEVICES": ""})
            for i in range(workers)]


class TrialGrants:
    """The new trials of a run, handed out by the parent one at a time to the worker that asks first.

    A worker asks over its pipe before each trial (:func:`ask_for_trial`); the parent answers at once.
    So the total is exact (what a worker was granted and did not end by itself -- its trial failed by
    its death -- is given back, :meth:`give_back`), and a worker whose trials were short takes the next
    one instead of leaving its core idle while another works through a fixed share."""

    def __init__(self, n_trials: int, deadline: float | None = None) -> None:
        self.left = n_trials
        self.deadline = deadline
        self.granted: dict[int, int] = {}  # process id -> trials granted to it

    @property
    def open(self) -> bool:
        """Trials are left to grant, and the run's time is not up."""
        return self.left > 0 and (self.deadline is None or time.monotonic() < self.deadline)

    def grant(self, pid: int) -> bool:
        if not self.open:
            return False
        self.left -= 1
        self.granted[pid] = self.granted.get(pid, 0) + 1
        return True

    def give_back(self, pid: int, ended: int) -> None:
        """A worker died having ended ``ended`` of its granted trials by themselves: the rest are granted anew."""
        self.left += max(0, self.granted.pop(pid, 0) - ended)

    def answer(self, pid: int, conn: Any) -> bool:
        """Answer the request waiting on ``conn``; False when the worker's end is closed (it has ended)."""
        try:
            conn.recv()
        except (EOFError, OSError):
            return False
        try:
            conn.send(self.grant(pid))
        except OSError:  # it died after asking: its exit code tells the rest
            return False
        return True


def ask_for_trial(conn: Any) -> bool:
    """In a worker: may it start another trial? (Asks the parent; no answer, the parent is gone: no.)"""
    try:
        conn.send(True)
        return bool(conn.recv())
    except (EOFError, OSError):
        return False


def start_method(plan: WorkerPlan, backend: str) -> str:
    """How a worker process starts: ``"fork"`` where this process has imported TensorFlow but not started its
    runtime (no operation has run, so no thread pool, device or kernel exists yet: the child starts its own)
    and runs one Python thread, on Linux, for a CPU worker -- the child then has TensorFlow, MLflow and Optuna
    imported at no cost (a fresh Python pays ~7 CPU seconds for them); otherwise ``"spawn"``: a fresh Python
    that sets its environment (threads, GPU) before it imports anything."""
    import threading

    if (sys.platform != "linux" or backend != "tensorflow" or plan.env.get("CUDA_VISIBLE_DEVICES") != ""
            or "tensorflow" not in sys.modules or threading.active_count() > 1):
        return "spawn"
    try:
        from tensorflow.python.eager import context
    except ImportError:
        return "spawn"
    return "fork" if getattr(context, "_context", True) is None else "spawn"


def _worker_main(conn: Any, env: dict[str, str], backend: str, inherited: list[int] | None = None) -> None:
    """Entry point of a worker process (spawned, so nothing of Keras is imported yet; or forked from a
    parent that imported it but never ran it, see :func:`start_method`).

    It sets its environment (threads, GPU), imports its Keras backend and nnstudy's trial pipeline at
    once -- while the parent still validates the spec and data and creates the stores -- then waits on
    ``conn`` for its task: ``(spec, store, data, n_trials, timeout)``, or ``None`` (the study did not
    start: exit 0 having written nothing). It runs at most ``n_trials`` trials, each granted by the
    parent over ``conn`` when it asks (:class:`TrialGrants`). ``inherited``: file descriptors a forked
    child closes (the parent's ends of the other workers' pipes).

    It starts with SIGINT ignored (see :func:`nnstudy.interrupts.sigint_ignored`): a Ctrl-C before the gate
    below is installed reaches the parent, which stops it with SIGTERM. Exits 130 when interrupted, its
    running trial recorded."""
    from nnstudy.interrupts import GATE

    GATE.install()
    for fd in inherited or []:
        with contextlib.suppress(OSError):
            os.close(fd)
    try:
        from nnstudy import runtime

        os.environ.update(env)
        runtime.configure(backend, import_keras=True)
        from nnstudy.context import open_context
        from nnstudy.storage import end_interrupted_trials

        try:
            task = conn.recv()
        except EOFError:  # the parent is gone before the study started
            task = None
        if task is None:
            conn.close()
            return
        spec, store, data, n_trials, timeout = task
        with GATE.critical():
            ctx = open_context(spec, store, data)
            try:
                GATE.check()
                if ask_for_trial(conn):
                    ctx.optimize(n_trials, timeout=timeout, next_trial=lambda: ask_for_trial(conn))
            except KeyboardInterrupt:
                end_interrupted_trials(ctx.study, ctx.tracker, [os.getpid()], trial_ids=ctx.started)
                raise
            except Exception as err:
                if not is_disk_full(err):
                    raise
                try:  # as far as the full disk lets it through: the parent's next run repairs the rest
                    end_interrupted_trials(ctx.study, ctx.tracker, [os.getpid()], reason="disk-full",
                                           trial_ids=ctx.started)
                except Exception:
                    pass
                sys.exit(DISK_FULL_EXIT)
    except KeyboardInterrupt:
        sys.exit(130)
    # every record is committed: skip tearing down TensorFlow's, MLflow's and SQLAlchemy's state at exit, which
    # took seconds at the end of every study (the parent waits for its workers before it writes the report)
    from nnstudy.store import checkpoint_written

    checkpoint_written()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class WorkerPool:
    """The worker processes of a study, started early.

    Starting a worker costs seconds (a fresh Python importing TensorFlow, MLflow and Optuna), so the
    pool spawns one per plan when it is made -- before the parent prepares the data and creates the
    stores -- and :meth:`take` hands a started one its trials; a later :meth:`take` for the same plan
    (recycling, a killed worker replaced) starts a fresh one. :meth:`close` ends the workers that never
    got a task (the study stopped before them: bad data, Ctrl-C): they wrote nothing."""

    def __init__(self, plans: list[WorkerPlan], backend: str) -> None:
        self.plans, self.backend = plans, backend
        self._waiting: dict[int, tuple[Any, Any]] = {}
        self._ends: list[Any] = []  # this process's ends of every worker's pipe (closed ones dropped)
        for i in range(len(plans)):
            self._waiting[i] = self._start(i)

    def _start(self, i: int) -> tuple[Any, Any]:
        from nnstudy.interrupts import sigint_ignored

        method = start_method(self.plans[i], self.backend)
        context: Any = multiprocessing.get_context(method)
        ours, theirs = context.Pipe()  # the task, then the worker's requests for trials and their answers
        # a forked child holds copies of this process's ends of the other workers' pipes (waiting for their
        # task or asking for trials): it closes them, so that a worker sees the end of its pipe when this
        # process closes its end
        self._ends = [conn for conn in self._ends if not conn.closed]
        others = [conn.fileno() for conn in self._ends] if method == "fork" else []
        proc = context.Process(target=_worker_main, name=f"nnstudy-{self.plans[i].name}", daemon=False,
                               args=(ours, self.plans[i].env, self.backend, others))
        with sigint_ignored():  # inherited: the child takes Ctrl-C only once it can record it
            proc.start()
        ours.close()
        self._ends.append(theirs)
        return proc, theirs

    def take(self, i: int, task: tuple[Any, ...] | None) -> tuple[Any, Any]:
        """Give plan ``i``'s worker (started already, else now) its task; returns its process and the
        parent's end of its pipe, on which it asks for trials (closed already for a ``None`` task)."""
        proc, conn = self._waiting.pop(i) if i in self._waiting else self._start(i)
        try:
            conn.send(task)
        except (BrokenPipeError, EOFError, OSError):
            pass  # it died before it could take the task: the caller sees its exit code
        if task is None:
            conn.close()
        return proc, conn

    def close(self) -> None:
        """End the workers still waiting for a task (they hold nothing yet: killed at once)."""
        for proc, conn in self._waiting.values():
            conn.close()
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=10)
        self._waiting.clear()


#: seconds the parent waits for interrupted workers to record their trials before it kills them
STOP_WAIT_S = 20.0


def _stop(procs: list[Any], wait_s: float = STOP_WAIT_S) -> None:
    """SIGTERM each live worker (each records its running trial and exits 130); SIGKILL those still
    alive after ``wait_s`` seconds."""
    for proc in procs:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    for proc in procs:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=10)


def run_workers(ctx: StudyContext, pool: WorkerPool, *, progress: StudyProgress | None = None,
                trials_per_process: int = 0, poll_s: float = 0.5,
                on_tail: Callable[[], None] | None = None) -> None:
    """Run the study's new trials in the pool's processes, one per plan; return when all have ended.

    ``on_tail`` is called once, in this process, when the study's last trials run and a core is free (a
    worker has ended with nothing left to start): the end of the study can get ready there.

    With ``trials_per_process > 0`` a worker process exits after that many trials and a fresh one
    takes over: TensorFlow keeps a few MB per traced model for the life of a process,
    so recycling keeps a long study's memory flat.

    A worker killed by a signal (``kill -9``, the kernel's OOM killer) loses only its running trial:
    that trial ends FAIL (``worker-died``), its run KILLED, it is re-run with the same parameters and
    seed (``[study].max_retries``), its grant is given back and a fresh worker started, so
    the number of trials that ended by themselves stays exactly ``n_trials``. Ctrl-C or SIGTERM stops
    every worker (each records its running trial FAIL / KILLED) and raises ``KeyboardInterrupt``.
    """
    import optuna

    from nnstudy.interrupts import GATE
    from nnstudy.storage import end_interrupted_trials, recover_stale_trials

    plans = pool.plans
    deadline = time.monotonic() + ctx.spec.study.timeout if ctx.spec.study.timeout else None
    grants = TrialGrants(ctx.spec.study.n_trials, deadline)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    done_before = len(ctx.study.get_trials(deepcopy=False, states=finished))
    running: dict[int, Any] = {}  # plan index -> process
    asking: dict[Any, int] = {}  # the parent's end of a running worker's pipe -> its process id
    started: list[Any] = []
    ended: list[Any] = []
    deaths = 0

    def start(i: int) -> None:
        if not grants.open:
            return
        left = None if deadline is None else deadline - time.monotonic()
        # the most trials this process may run (each still granted when it asks): all that are left, or
        # trials_per_process
        cap = min(grants.left, trials_per_process) if trials_per_process > 0 else grants.left
        proc, conn = pool.take(i, (ctx.spec, ctx.store, ctx.data, cap, left))
        running[i] = proc
        started.append(proc)
        assert proc.pid is not None
        asking[conn] = int(proc.pid)

    def ran_by(pid: int) -> int:
        """Trials a (dead) worker ended by themselves: the ones its death failed do not count."""
        return sum(1 for t in ctx.study.get_trials(deepcopy=False, states=finished)
                   if t.user_attrs.get(ATTR_PID) == pid and t.user_attrs.get(ATTR_FAIL_REASON) != "worker-died")

    def show() -> None:
        if progress is not None:
            done = len(ctx.study.get_trials(deepcopy=False, states=finished)) - done_before
            progress.show(ctx.study, done, running=len(running))

    def hang_up(pid: int | None = None) -> None:
        """Close the parent's ends of the pipes (of worker ``pid``; None: all): a worker waiting for an
        answer gets none (no more trials)."""
        for conn in [c for c, p in asking.items() if pid is None or p == pid]:
            asking.pop(conn)
            conn.close()

    try:
        with GATE.interruptible():  # waiting for the workers: an interrupt stops them at once
            for i in range(len(plans)):
                start(i)
            next_show = time.monotonic()
            while running:
                ready = _readable([*asking, *(proc.sentinel for proc in running.values())], poll_s)
                for conn in [c for c in asking if c in ready]:
                    if not grants.answer(asking[conn], conn):  # that worker has ended
                        hang_up(asking[conn])
                for i, proc in list(running.items()):
                    if not proc.is_alive():
                        proc.join()
                        running.pop(i)
                        hang_up(int(proc.pid))
                        killed = proc.exitcode is not None and proc.exitcode < 0
                        if killed:  # by a signal: fail (and re-run) its trial
                            deaths += 1
                            recover_stale_trials(ctx.study, ctx.tracker)
                        if killed and deaths <= MAX_WORKER_DEATHS:
                            print(f"warning: worker {proc.name} (pid {proc.pid}) was killed by signal "
                                  f"{-proc.exitcode}; its running trial is re-run", file=sys.stderr)
                            grants.give_back(int(proc.pid), ran_by(int(proc.pid)))
                            start(i)  # a fresh worker for the trials left
                        elif proc.exitcode == 130:  # a worker interrupted on its own (kill -INT/-TERM): stop all
                            ended.append(proc)
                            GATE.interrupt()
                        else:
                            ended.append(proc)
                            if proc.exitcode == 0:
                                start(i)  # recycling: a fresh process for the trials left
                if on_tail is not None and len(running) < len(plans) and not grants.open:
                    on_tail()
                    on_tail = None
                if time.monotonic() >= next_show:
                    show()
                    next_show = time.monotonic() + poll_s
    except KeyboardInterrupt:
        hang_up()
        _stop(list(running.values()))
        end_interrupted_trials(ctx.study, ctx.tracker, [p.pid for p in started if p.pid is not None])
        raise
    hang_up()
    show()
    failed = [p for p in ended if p.exitcode not in (0, None)]
    if any(p.exitcode == 130 for p in failed):
        raise KeyboardInterrupt
    if any(p.exitcode == DISK_FULL_EXIT for p in failed):
        raise OSError(errno.ENOSPC, "No space left on device (a worker's write to the store)")
    if failed:
        raise NnstudyError(f"worker {failed[0].name} exited with code {failed[0].exitcode}; "
                           "its finished trials are kept")


def _readable(objects: list[Any], timeout: float) -> list[Any]:
    """Those of ``objects`` (pipe ends, process sentinels) ready to read within ``timeout`` seconds:
    ``multiprocessing.connection.wait``, with no frame of ``multiprocessing`` on the stack while it waits,
    so that an interrupt is raised at once there (see :mod:`nnstudy.interrupts`)."""
    with selectors.DefaultSelector() as selector:
        for obj in objects:
            selector.register(obj, selectors.EVENT_READ)
        return [key.fileobj for key, _ in selector.select(timeout)]


#: a worker's exit code when a write found the store's disk full (ENOSPC's number)
DISK_FULL_EXIT = errno.ENOSPC

#: worker processes killed by a signal that a study replaces before it gives up (the next one is an error)
MAX_WORKER_DEATHS = 10
