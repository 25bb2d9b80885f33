"""Ctrl-C and SIGTERM, turned into ``KeyboardInterrupt`` only where it cannot tear a record in half.

Python raises ``KeyboardInterrupt`` at whatever bytecode runs when the signal arrives: inside
Optuna's own bookkeeping (a trial asked but never told stays RUNNING), inside an MLflow or
SQLAlchemy call, or between two writes that belong together (a run created but not yet linked
to its trial). :data:`GATE` raises it at once only where that is safe:

* while a trial builds or trains its model (``nnstudy.training.train``, ``ModelFactory.build``),
  where the trial pipeline catches it and records the trial FAIL (``interrupted``) and its run KILLED;
* in sections marked :meth:`InterruptGate.interruptible` (before the stores are opened, the
  parent process's wait for its workers);

and never while a store library (Optuna, MLflow, SQLAlchemy, nnstudy's own store modules) is on
the stack, nor in sections marked :meth:`InterruptGate.critical`. Elsewhere the interrupt waits:
the signal is re-delivered to the main thread every :data:`RETRY_S` seconds until it lands in a
safe place, and :meth:`InterruptGate.check` (called after every trial and epoch) raises it. After
it has been raised once, further signals are ignored, so the clean-up they would interrupt runs
to its end; the process then exits with code 130.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

#: modules whose frames on the stack mean "a store is being written or read": wait
STORE_MODULES = ("optuna", "mlflow", "sqlalchemy", "alembic", "sqlite3", "psycopg", "requests", "urllib3",
                 "nnstudy.tracking", "nnstudy.recorder", "nnstudy.storage", "nnstudy.parent", "nnstudy.sync",
                 "nnstudy.export", "nnstudy.store", "nnstudy.context", "multiprocessing")
#: (module, function) whose frames mean "a trial is building or training": raise now (the trial records it)
TRAINING_SECTIONS = frozenset({("nnstudy.training", "train"), ("nnstudy.model", "ModelFactory.build")})
#: seconds between re-deliveries of a waiting interrupt
RETRY_S = 0.2
#: the signals that interrupt a study
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _is_store(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in STORE_MODULES)


class InterruptGate:
    """Decides, for each SIGINT/SIGTERM, whether to raise ``KeyboardInterrupt`` now or a little later."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first signal received, None before any
        self.raised = False
        self.open = True  # outside the sections below: raise at once
        self.installed = False
        self._retrier: threading.Thread | None = None
        self._before: dict[int, Any] = {}

    @property
    def pending(self) -> bool:
        """A signal arrived and its ``KeyboardInterrupt`` has not been raised yet."""
        return self.signum is not None and not self.raised

    def install(self) -> None:
        """Handle SIGINT and SIGTERM with the gate (from the main thread)."""
        for signum in SIGNALS:
            self._before[signum] = signal.signal(signum, self._handle)
        self.installed = True

    def restore(self) -> None:
        """Give SIGINT and SIGTERM back to the handlers they had before :meth:`install` (a no-op if not installed)."""
        for signum, before in self._before.items():
            signal.signal(signum, before)
        self._before.clear()
        self.installed = False

    def check(self) -> None:
        """A safe point: raise the interrupt that is waiting (or one that was raised and then swallowed)."""
        if self.signum is not None:
            self.raised = True
            raise KeyboardInterrupt(f"signal {self.signum}")

    def interrupt(self) -> None:
        """Raise ``KeyboardInterrupt`` as if a SIGINT had come (an interrupted worker, seen by its parent)."""
        if self.signum is None:
            self.signum = signal.SIGINT
        self.check()

    @contextmanager
    def critical(self) -> Iterator[None]:
        """Interrupts wait until the section ends (except in a trial's training), then are raised."""
        with self._mode(False):
            yield

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Interrupts are raised at once (except inside a store call)."""
        with self._mode(True):
            yield

    @contextmanager
    def _mode(self, open_: bool) -> Iterator[None]:
        before, self.open = self.open, open_
        try:
            yield
        finally:
            self.open = before
        if self.open and self.pending:
            self.check()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        if self.raised:
            return  # the clean-up of the first interrupt is running: let it finish
        if self._may_raise(frame):
            self.raised = True
            raise KeyboardInterrupt(f"signal {signum}")
        self._retry_later()

    def _may_raise(self, frame: FrameType | None) -> bool:
        while frame is not None:
            module = str(frame.f_globals.get("__name__", ""))
            if _is_store(module):
                return False
            if (module, frame.f_code.co_qualname) in TRAINING_SECTIONS:
                return True
            frame = frame.f_back
        return self.open

    def _retry_later(self) -> None:
        if self._retrier is not None and self._retrier.is_alive():
            return
        main = threading.main_thread().ident
        assert main is not None
        handler: Any = self._handle

        def retry() -> None:
            while self.pending:
                time.sleep(RETRY_S)
                signum = self.signum
                if signum is None or not self.pending or signal.getsignal(signum) != handler:
                    return
                signal.pthread_kill(main, signum)

        self._retrier = threading.Thread(target=retry, name="nnstudy-interrupt", daemon=True)
        self._retrier.start()


#: the one gate of this process
GATE = InterruptGate()


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while a worker process is started: the child inherits SIG_IGN through ``exec`` (and
    Python then installs no ``KeyboardInterrupt`` handler of its own), so a Ctrl-C while it starts up
    cannot print a traceback from its bootstrap; it takes the signals once it has installed :data:`GATE`.
    A SIGINT that Python caught but had not handled yet is handled by the ``signal.signal`` calls here."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
