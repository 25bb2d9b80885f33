"""Empty stores made ahead: the schemas of a new study's SQLite stores, built on another core.

Creating an MLflow SQLite store runs every one of MLflow's database migrations (seconds: about half
as long as importing TensorFlow), and a new study's first ``nnstudy run`` used to pay that after its
spec and data were checked. :meth:`SchemaTemplates.start` makes empty Optuna and MLflow stores in a
private temporary folder, in a separate process, while ``nnstudy run`` imports its frameworks and
checks the spec and data; :meth:`SchemaTemplates.install` then puts a copy where the study's store
will be -- only where no file is yet, atomically (a hard link of a complete copy: another process
that made the file first wins) -- so the store opens with its schema in place. Nothing is written
where the study lives before the spec and data have passed, and whatever goes wrong with the
templates (a slow machine, a full temp disk) only means the store is made the ordinary way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: seconds ``install`` waits for the templates before the store is made the ordinary way
WAIT_S = 30.0


class SchemaTemplates:
    """The empty stores being made for the local SQLite files of a store that do not exist yet."""

    def __init__(self, targets: dict[str, Path], folder: Path, process: subprocess.Popen[bytes]) -> None:
        self.targets = targets  # "optuna" / "mlflow" -> the study's file to be made
        self.folder = folder
        self.process = process

    @classmethod
    def start(cls, storage: str | None, tracking_uri: str | None) -> SchemaTemplates | None:
        """Start making the templates of the store that ``storage`` and ``tracking_uri`` name (as
        :func:`nnstudy.store.resolve_store` resolves them); None when there is nothing to make (files
        that exist, database servers, a URI that will be refused)."""
        from nnstudy.errors import NnstudyError
        from nnstudy.store import resolve_store

        try:
            store = resolve_store(storage, tracking_uri)
        except NnstudyError:
            return None  # the run reports it
        targets = {kind: Path(url.removeprefix("sqlite:///")).absolute()
                   for kind, url in (("optuna", store.storage), ("mlflow", store.tracking_uri))
                   if url.startswith("sqlite:///")}
        targets = {kind: path for kind, path in targets.items() if not os.path.lexists(path)}
        if not targets:
            return None
        try:
            folder = Path(tempfile.mkdtemp(prefix="nnstudy-schemas-"))
            process = subprocess.Popen([sys.executable, "-m", "nnstudy.schemas", str(folder), *sorted(targets)],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        except OSError:
            return None
        return cls(targets, folder, process)

    def install(self, wait_s: float = WAIT_S) -> list[Path]:
        """Put each finished template where its file is still missing; returns the files put in place."""
        try:
            ok = self.process.wait(timeout=wait_s) == 0
        except subprocess.TimeoutExpired:
            ok = False
        installed: list[Path] = []
        if ok:
            for kind, target in self.targets.items():
                if _install(self.folder / f"{kind}.db", target):
                    installed.append(target)
        self.discard()
        return installed

    def discard(self) -> None:
        """Stop making the templates and remove them."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _install(template: Path, target: Path) -> bool:
    """A complete copy of ``template`` linked in as ``target`` unless that exists; False where it could not be."""
    if not template.is_file() or os.path.lexists(target):
        return False
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        shutil.copyfile(template, part)
        os.link(part, target)  # fails if another process made the file meanwhile: it is theirs
        return True
    except OSError:  # made meanwhile, no hard links, a full disk: the store is made as ever
        return False
    finally:
        try:
            part.unlink()
        except OSError:
            pass


def make(folder: Path, kinds: list[str]) -> None:
    """Make the empty stores ``optuna.db`` and/or ``mlflow.db`` in ``folder`` (the template process)."""
    if "optuna" in kinds:
        from nnstudy.storage import make_storage

        storage = make_storage(f"sqlite:///{folder}/optuna.db")
        storage.engine.dispose()  # type: ignore[attr-defined]
    if "mlflow" in kinds:
        from mlflow.tracking import MlflowClient

        # as nnstudy's Tracker opens it (MLflow makes its tables and the Default experiment on first use)
        MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db").search_experiments(max_results=1)


if __name__ == "__main__":
    make(Path(sys.argv[1]), sys.argv[2:])
