"""Where a run's log lines go besides ``log.jsonl``: ``trainer.report_to: [tensorboard, csv]``.

``csv`` writes ``log.csv`` (one row per ``log.jsonl`` line, a column per key, always
available); ``tensorboard`` writes event files under ``tensorboard/`` through
``torch.utils.tensorboard`` (``pip install 'formerkit[tensorboard]'``), with training scalars
as ``train/loss``, ``train/lr``, ... and evaluation metrics as ``val/loss``, ``test/bleu``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from formerkit.extras import is_available, missing_message

REPORTERS = ("csv", "tensorboard")
CSV_FILE = "log.csv"
TENSORBOARD_DIR = "tensorboard"


def check_reporters(report_to: Any) -> list[str]:
    """Validate ``trainer.report_to`` (a list of ``REPORTERS``, or one name); returns the
    names as a list."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    unknown = [n for n in names if n not in REPORTERS]
    if unknown:
        raise ValueError(f"TrainerConfig.report_to has unknown entries {unknown}; expected "
                         f"some of {list(REPORTERS)} (log.jsonl is always written)")
    return names


def require_reporters(report_to: Any) -> list[str]:
    """``check_reporters``, and that each reporter's package is installed (checked when a
    run is set up, so a missing extra stops it before any training)."""
    names = check_reporters(report_to)
    if "tensorboard" in names and not is_available("tensorboard"):
        from formerkit.extras import MissingDependencyError

        raise MissingDependencyError(missing_message("tensorboard",
                                                     "trainer.report_to=[tensorboard]"),
                                     name="tensorboard")
    return names


class CSVLogger:
    """``log.csv``: the rows of ``log.jsonl``; the header grows when a new key appears (the
    file is then rewritten, which happens a few times per run: first evaluation, final)."""

    def __init__(self, root: Path) -> None:
        self.file = Path(root) / CSV_FILE
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = []

    def start(self, records: list[dict[str, Any]]) -> None:
        self.rows = []
        self.columns = []
        for record in records:
            self._add_columns(record)
            self.rows.append(record)
        self._rewrite()

    def log(self, record: dict[str, Any]) -> None:
        self.rows.append(record)
        if self._add_columns(record):
            self._rewrite()
            return
        with open(self.file, "a", newline="") as handle:
            csv.DictWriter(handle, self.columns).writerow(record)

    def close(self) -> None:
        pass

    def _add_columns(self, record: dict[str, Any]) -> bool:
        new = [key for key in record if key not in self.columns]
        self.columns += new
        return bool(new)

    def _rewrite(self) -> None:
        with open(self.file, "w", newline="") as handle:
            writer = csv.DictWriter(handle, self.columns)
            writer.writeheader()
            writer.writerows(self.rows)


class TensorBoardLogger:
    """Scalars of each log line at its ``step``, in ``tensorboard/`` (``tensorboard --logdir
    RUN``)."""

    def __init__(self, root: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(root) / TENSORBOARD_DIR))

    def start(self, records: list[dict[str, Any]]) -> None:
        """A resumed run appends to the same event directory; TensorBoard keeps the latest
        value of a step, so nothing is replayed."""

    def log(self, record: dict[str, Any]) -> None:
        step = int(record.get("step", 0))
        for key, value in record.items():
            if key in ("step", "final") or isinstance(value, bool) or \
                    not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            self.writer.add_scalar(scalar_tag(key), value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def scalar_tag(key: str) -> str:
    """``val_loss`` -> ``val/loss``, ``test_bleu`` -> ``test/bleu``, ``loss`` -> ``train/loss``."""
    for split in ("val", "test"):
        if key.startswith(f"{split}_"):
            return f"{split}/{key[len(split) + 1:]}"
    return f"train/{key}"


def build_loggers(report_to: list[str], root: Path) -> list[Any]:
    """One logger per ``report_to`` entry, writing into the run directory ``root``."""
    kinds = {"csv": CSVLogger, "tensorboard": TensorBoardLogger}
    return [kinds[name](root) for name in require_reporters(report_to)]
