"""Per-epoch wall time and logs in a JSON file that survives a resumed run.

A long training run (hours on CPU cores) is killed and resumed by ``keras.callbacks.BackupAndRestore``;
what it cost in wall time is then spread over several processes. ``EpochTimeLog`` writes after every epoch

    {"epochs": [{"epoch": 1, "seconds": 81.2, "loss": 0.41, ...}, ...], "seconds": <sum of the epochs' seconds>}

and a resumed run keeps the records of the epochs its backup holds, so ``seconds`` is the training time of
the finished model whatever the number of restarts (time between a kill and the restart is not counted).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras

__all__ = ["EpochTimeLog", "resumed_epochs"]


def resumed_epochs(backup_dir: str | Path) -> int:
    """Finished epochs that ``keras.callbacks.BackupAndRestore(backup_dir)`` will restore (0 when none).

    Reads the ``training_metadata.json`` that BackupAndRestore writes next to its checkpoint.
    """
    try:
        return int(json.loads((Path(backup_dir) / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _read(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


class EpochTimeLog(keras.callbacks.Callback):
    """Writes each epoch's wall seconds and logs to ``path`` (JSON, format in the module docstring).

    Args:
      path: the JSON file, rewritten at every epoch end.
      resumed_epochs: the finished epochs a resumed ``fit`` starts after (``resumed_epochs(backup_dir)``);
        their records are kept and any later one dropped (an epoch killed before its backup runs again).
        0 starts a fresh log.

    Put it before ``BackupAndRestore`` in ``callbacks`` so that an epoch's record is written before its
    backup.
    """

    def __init__(self, path: str | Path, resumed_epochs: int = 0):
        super().__init__()
        if not isinstance(resumed_epochs, int) or resumed_epochs < 0:
            raise ValueError(f"resumed_epochs must be an integer >= 0, got {resumed_epochs!r}")
        self.path = Path(path)
        epochs = _read(self.path).get("epochs", []) if resumed_epochs else []
        self.epochs = [e for e in epochs if isinstance(e, dict) and e.get("epoch", 0) <= resumed_epochs]
        self._t0 = None

    @staticmethod
    def total_seconds(path: str | Path) -> float | None:
        """The ``seconds`` stored in the log at ``path`` (None when there is no readable log)."""
        try:
            return float(_read(Path(path))["seconds"])
        except (KeyError, TypeError, ValueError):
            return None

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs = [e for e in self.epochs if e["epoch"] < epoch + 1]
        self.epochs.append({"epoch": epoch + 1, "seconds": round(time.perf_counter() - self._t0, 1),
                            **{k: round(float(v), 4) for k, v in (logs or {}).items()}})
        self.path.write_text(json.dumps({"epochs": self.epochs,
                                         "seconds": round(sum(e["seconds"] for e in self.epochs), 1)}, indent=2))
