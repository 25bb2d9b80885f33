"""The interrupt gate: a real SIGINT to this process is raised at once where it is safe, waits inside a
critical section (and is raised as it ends), and is raised only once. (Whole studies interrupted at
many moments: tests/test_faults.py.)"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from nnstudy.interrupts import InterruptGate


@pytest.fixture
def gate() -> Iterator[InterruptGate]:
    gate = InterruptGate()
    gate.install()
    try:
        yield gate
    finally:
        gate.restore()


def _sigint_and_wait() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.3)  # the handler runs between bytecodes


def test_outside_any_section_the_interrupt_is_raised_at_once(gate: InterruptGate) -> None:
    with pytest.raises(KeyboardInterrupt, match="signal 2"):
        _sigint_and_wait()
    assert gate.raised and not gate.pending


def test_a_critical_section_runs_to_its_end_then_the_interrupt_is_raised(gate: InterruptGate) -> None:
    finished = False
    with pytest.raises(KeyboardInterrupt):
        with gate.critical():
            _sigint_and_wait()
            assert gate.pending  # arrived, waiting
            finished = True
    assert finished


def test_after_the_first_interrupt_further_signals_are_ignored(gate: InterruptGate) -> None:
    with pytest.raises(KeyboardInterrupt):
        _sigint_and_wait()
    _sigint_and_wait()  # the clean-up of the first one is not interrupted again
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.3)
    assert gate.signum == signal.SIGINT


def test_restore_gives_the_signals_back() -> None:
    gate = InterruptGate()
    before = signal.getsignal(signal.SIGTERM)
    gate.install()
    assert signal.getsignal(signal.SIGTERM) != before
    gate.restore()
    assert signal.getsignal(signal.SIGTERM) == before
