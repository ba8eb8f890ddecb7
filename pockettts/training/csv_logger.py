"""A CSV logger that keeps a resumed run's history.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when its folder already holds one, so resuming a
run in place (``ckpt_path=RUN/checkpoints/last.ckpt`` with the same ``hydra.run.dir``) would lose
every metric logged before the crash. This one keeps them: it drops only the rows the interrupted
process logged at or after the first step the resumed one logs (those steps are trained and logged
again), and merges the columns of both.
"""

from __future__ import annotations

import csv
import os

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _KeepingExperimentWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        self._merged = False
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        """Lightning's writer deletes an existing ``metrics.csv`` here; this one keeps it."""

    def save(self) -> None:
        if self.metrics and not self._merged:
            self._keep_earlier_rows(min(int(row["step"]) for row in self.metrics))
        super().save()

    def _keep_earlier_rows(self, first_new_step: int) -> None:
        """Rewrite ``metrics.csv`` with only its rows before ``first_new_step``, and adopt its columns."""
        self._merged = True
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as file:
            reader = csv.DictReader(file)
            rows = [row for row in reader if row.get("step") and int(float(row["step"])) < first_new_step]
            columns = list(reader.fieldnames or [])
        with open(self.metrics_file_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(set(self.metrics_keys) | set(columns))


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume into the same folder (same arguments)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
