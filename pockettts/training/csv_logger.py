"""A CSV logger that keeps a resumed run's history.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when its folder already holds one, so resuming a
run in place (``ckpt_path=RUN/checkpoints/last.ckpt`` with the same ``hydra.run.dir``) would lose
every metric logged before the crash. This one keeps them, and forgets only what the resumed
process logs again: each metric's earlier values from the first step the resumed process logs that
metric at.

Per metric, not per row: the checkpoint of step S is written before the row of step S's training
metrics (Lightning logs a batch after its ``on_train_batch_end`` hooks), while the learning-rate
monitor logs step S again at the start of the next batch, before the resumed process logs its
first training row (S + 1). Cutting every row from the first step logged (S) would lose the
checkpoint step's own training row, which nobody logs again.
"""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

NOT_METRICS = ("step", "epoch")


class _KeepingExperimentWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        self._started: set[str] = set()  # metrics this process has logged
        self._earlier_rows = 0  # leading rows of metrics.csv that an interrupted process wrote
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                reader = csv.DictReader(file)
                self._earlier_rows = sum(1 for _ in reader)
                self.metrics_keys = sorted(reader.fieldnames or [])

    def _check_log_dir_exists(self) -> None:
        """Lightning's writer deletes an existing ``metrics.csv`` here; this one keeps it."""

    def save(self) -> None:
        restarts: dict[str, int] = {}
        for row in self.metrics:
            for key in row.keys() - self._started - set(NOT_METRICS):
                restarts.setdefault(key, int(row["step"]))
        if restarts and self._earlier_rows:
            self._forget_earlier(restarts)
        self._started |= restarts.keys()
        super().save()

    def _forget_earlier(self, restarts: dict[str, int]) -> None:
        """Blank the interrupted process's values of each ``metric`` at steps >= ``restarts[metric]``
        and drop the rows left without a metric."""
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            rows, columns = list(reader), list(reader.fieldnames or [])
        earlier, later = rows[: self._earlier_rows], rows[self._earlier_rows :]
        for row in earlier:
            for key, first_step in restarts.items():
                if key in row and int(float(row["step"])) >= first_step:
                    row[key] = ""
        earlier = [row for row in earlier if any(v for k, v in row.items() if k not in NOT_METRICS)]
        self._earlier_rows = len(earlier)
        with self._fs.open(self.metrics_file_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            writer.writerows(earlier + later)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume into the same folder (same arguments)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
