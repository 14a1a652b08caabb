"""Training runs: config, status, progress, log lines and checkpoints (learned state + step/epoch).

Status moves queued -> running -> done | failed | cancelled (or queued -> cancelled), and a cancelled or
failed run can resume (running again; the engine goes on from its last checkpoint). A run records the
process id that started it; when the library opens, a run still marked running whose process is gone is
marked failed ("interrupted"), so a crash never leaves a concept locked by a ghost run.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from store import faults
from store.errors import InvalidValueError, NotFoundError, RunStateError
from store.models import Checkpoint, LogLine, Run, RunCheck, loads, utc_now
from store.photos import check_generated_image, extension
from store.tokens import read_state
from store.validation import check_count, check_fraction, to_json

if TYPE_CHECKING:
    from store.library import Library

STATUSES = ("queued", "running", "cancelled", "failed", "done")
FINISHED = ("cancelled", "failed", "done")
_NEXT = {
    "queued": ("running", "cancelled"),
    "running": FINISHED,
    "cancelled": ("running",),
    "failed": ("running",),
}
MAX_MESSAGE_CHARS = 10_000


class Runs:
    """Training runs; reach it as `library.runs`."""

    def __init__(self, library: Library) -> None:
        self._lib = library

    def create(self, name: str, config: Mapping[str, Any]) -> Run:
        """Queue a run for a concept with its training configuration (a JSON object)."""
        config_json = to_json(config, "run config")
        now = utc_now()
        with self._lib.change(lock=True):
            concept_id = self._lib.concept_id(name)
            run_id = (
                self._lib.db["runs"]
                .insert(
                    {
                        "uid": uuid.uuid4().hex,
                        "concept_id": concept_id,
                        "config": config_json,
                        "status": "queued",
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                .last_pk
            )
        return self.get(int(run_id))

    def get(self, run_id: int) -> Run:
        rows = list(self._lib.db.query(_RUN_SELECT + " WHERE r.id = ?", [run_id]))
        if not rows:
            raise NotFoundError(f"no training run {run_id}")
        return self._record(rows[0])

    def list(self, name: str | None = None) -> list[Run]:
        """Runs, newest first (not those of concepts in the trash); only one concept's when `name` is given."""
        with self._lib.reading() as db:
            if name is None:
                rows = db.query(_RUN_SELECT + " WHERE c.trashed_at IS NULL ORDER BY r.id DESC")
            else:
                rows = db.query(
                    _RUN_SELECT + " WHERE r.concept_id = ? ORDER BY r.id DESC", [self._lib.concept_id(name)]
                )
            return [self._record(row) for row in rows]

    def interrupted(self, name: str) -> Run | None:
        """The concept's latest run that is not queued or running, when it was interrupted, failed or cancelled
        (training can resume it); None when it finished or there is none."""
        for run in self.list(name):
            if run.status in ("queued", "running"):
                continue
            return run if run.status in ("failed", "cancelled") else None
        return None

    def start(self, run_id: int) -> Run:
        """queued -> running, owned by this process."""
        now = utc_now()
        self._move(run_id, "running", {"started_at": now, "pid": os.getpid()}, ("queued",))
        return self.get(run_id)

    def resume(self, run_id: int) -> Run:
        """cancelled or failed -> running again, owned by this process (training continues from a checkpoint)."""
        self._move(run_id, "running", {"pid": os.getpid(), "finished_at": None, "error": None}, ("cancelled", "failed"))
        return self.get(run_id)

    def report(
        self,
        run_id: int,
        progress: float,
        *,
        step: int | None = None,
        total_steps: int | None = None,
        message: str | None = None,
    ) -> None:
        """Record a running run's progress (0-1), step, and a short status line."""
        changes: dict[str, Any] = {"progress": check_fraction(progress, "progress"), "updated_at": utc_now()}
        if step is not None:
            changes["step"] = check_count(step, "step")
        if total_steps is not None:
            changes["total_steps"] = check_count(total_steps, "total_steps")
        if message is not None:
            changes["message"] = _text(message, "message")
        with self._lib.change(lock=True):
            self._require_status(run_id, "running")
            self._lib.db["runs"].update(run_id, changes)

    def log(self, run_id: int, message: str, *, warning: bool = False) -> None:
        """Append a line to a run's log; `warning` marks one the user should keep in view."""
        line = _text(message, "log line")
        with self._lib.change(lock=True):
            self._require_status(run_id, *STATUSES)
            self._lib.db["run_logs"].insert(
                {"run_id": run_id, "at": utc_now(), "message": line, "warning": int(warning)}
            )

    def log_lines(self, run_id: int, *, after: int = 0) -> list[LogLine]:
        """A run's log lines in order, skipping the first `after` (to follow a log as it grows)."""
        self._require_status(run_id, *STATUSES)
        rows = self._lib.db.execute(
            "SELECT at, message, warning FROM run_logs WHERE run_id = ? ORDER BY id LIMIT -1 OFFSET ?", [run_id, after]
        )
        return [LogLine(at, message, bool(warning)) for at, message, warning in rows]

    def finish(
        self,
        run_id: int,
        status: str,
        *,
        error: str | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> Run:
        """End a run as done, failed (with `error`) or cancelled, with its final metrics."""
        if status not in FINISHED:
            raise InvalidValueError(f"a run finishes as one of {', '.join(FINISHED)}, not {status!r}")
        changes: dict[str, Any] = {"finished_at": utc_now()}
        if status == "done":
            changes["progress"] = 1.0
        if error is not None:
            changes["error"] = _text(error, "error")
        if metrics is not None:
            changes["metrics"] = to_json(metrics, "metrics")
        self._move(run_id, status, changes)
        return self.get(run_id)

    def add_checkpoint(
        self,
        run_id: int,
        state: bytes | str | Path,
        *,
        step: int,
        epoch: int,
        metrics: Mapping[str, Any] | None = None,
        optimizer_state: str | Path | None = None,
    ) -> Checkpoint:
        """Keep a running run's learned state at `step`/`epoch`; `optimizer_state` is a file the engine
        wrote inside the run's folder (see `folder`)."""
        check_count(step, "step")
        check_count(epoch, "epoch")
        metrics_json = to_json(metrics or {}, "metrics")
        data, _header = read_state(state)
        folder = self._folder_path(run_id)
        optimizer = None
        if optimizer_state is not None:
            optimizer = Path(optimizer_state).resolve()
            if not optimizer.is_file() or not optimizer.is_relative_to(folder.resolve()):
                raise InvalidValueError(f"optimizer state {optimizer_state} must be a file inside {folder}")
        with self._lib.change() as change:
            sha = change.stage("tokens", data, "safetensors")
            change.lock()
            self._require_status(run_id, "running")
            try:
                checkpoint_id = (
                    self._lib.db["checkpoints"]
                    .insert(
                        {
                            "run_id": run_id,
                            "step": step,
                            "epoch": epoch,
                            "sha256": sha,
                            "size_bytes": len(data),
                            "metrics": metrics_json,
                            "optimizer_state": str(optimizer.relative_to(folder.resolve())) if optimizer else None,
                            "created_at": utc_now(),
                        }
                    )
                    .last_pk
                )
            except sqlite3.IntegrityError as exc:
                raise InvalidValueError(f"run {run_id} already has a checkpoint at step {step}") from exc
            faults.reach("checkpoint row")
        return next(c for c in self.checkpoints(run_id) if c.id == checkpoint_id)

    def checkpoints(self, run_id: int) -> list[Checkpoint]:
        """A run's checkpoints by step."""
        folder = self._folder_path(run_id)
        rows = self._lib.db["checkpoints"].rows_where("run_id = ?", [run_id], order_by="step")
        return [
            Checkpoint(
                id=row["id"],
                run_id=run_id,
                step=row["step"],
                epoch=row["epoch"],
                sha256=row["sha256"],
                size_bytes=row["size_bytes"],
                metrics=loads(row["metrics"]),
                optimizer_state=folder / row["optimizer_state"] if row["optimizer_state"] else None,
                created_at=row["created_at"],
                path=self._lib.layout.file("tokens", row["sha256"], "safetensors"),
            )
            for row in rows
        ]

    def record_losses(self, run_id: int, losses: Sequence[float], *, first_step: int = 1) -> None:
        """Keep a running run's per-step losses: `losses[i]` is step `first_step + i`'s (a step recorded again,
        as after a resume, takes the new value)."""
        check_count(first_step, "first step")
        if first_step < 1:
            raise InvalidValueError("steps count from 1")
        rows = [(run_id, first_step + i, _loss(value)) for i, value in enumerate(losses)]
        with self._lib.change(lock=True):
            self._require_status(run_id, "running")
            self._lib.db.conn.executemany(
                "INSERT INTO run_losses (run_id, step, loss) VALUES (?, ?, ?)"
                " ON CONFLICT (run_id, step) DO UPDATE SET loss = excluded.loss",
                rows,
            )

    def forget_losses_after(self, run_id: int, step: int) -> None:
        """Drop the losses recorded after `step` (a resumed run trains those steps again)."""
        with self._lib.change(lock=True):
            self._require_status(run_id, "running")
            self._lib.db.execute("DELETE FROM run_losses WHERE run_id = ? AND step > ?", [run_id, step])

    def losses(self, run_id: int) -> list[tuple[int, float]]:
        """(step, loss) of every recorded step, in order."""
        self._require_status(run_id, *STATUSES)
        rows = self._lib.db.execute("SELECT step, loss FROM run_losses WHERE run_id = ? ORDER BY step", [run_id])
        return [(int(step), float(loss)) for step, loss in rows]

    def add_check(
        self, run_id: int, *, step: int, metrics: Mapping[str, Any], picture: bytes | None = None
    ) -> RunCheck:
        """Keep what a running run showed at `step` (0 before training): its scores and a PNG or JPEG sample."""
        check_count(step, "step")
        metrics_json = to_json(metrics, "metrics")
        with self._lib.change() as change:
            sha = fmt = None
            if picture is not None:
                fmt, _width, _height, _thumb = check_generated_image(picture, "sample picture")
                sha = change.stage("generated", picture, extension(fmt))
            change.lock()
            self._require_status(run_id, "running")
            self._lib.db.execute(
                "INSERT INTO run_checks (run_id, step, metrics, sha256, format, created_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, step) DO UPDATE SET metrics = excluded.metrics, sha256 = excluded.sha256,"
                " format = excluded.format, created_at = excluded.created_at",
                [run_id, step, metrics_json, sha, fmt, utc_now()],
            )
            faults.reach("run check row")
        return next(c for c in self.checks(run_id) if c.step == step)

    def checks(self, run_id: int) -> list[RunCheck]:
        """A run's checks by step: before training (step 0) and at each checkpoint."""
        self._require_status(run_id, *STATUSES)
        rows = self._lib.db["run_checks"].rows_where("run_id = ?", [run_id], order_by="step")
        return [
            RunCheck(
                run_id=run_id,
                step=row["step"],
                metrics=loads(row["metrics"]),
                path=self._lib.layout.file("generated", row["sha256"], extension(row["format"]))
                if row["sha256"]
                else None,
                created_at=row["created_at"],
            )
            for row in rows
        ]

    def folder(self, run_id: int) -> Path:
        """The run's own folder (created on demand) for files the engine keeps, e.g. optimizer state.

        It is deleted with the run's concept."""
        folder = self._folder_path(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def fail_interrupted(self) -> list[int]:
        """Mark failed every running run whose process is gone; returns their ids."""
        running = self._lib.db.execute("SELECT id, pid FROM runs WHERE status = 'running'").fetchall()
        dead = [run_id for run_id, pid in running if pid is None or not psutil.pid_exists(pid)]
        if dead:
            now = utc_now()
            with self._lib.change(lock=True):
                for run_id in dead:
                    self._lib.db.execute(
                        "UPDATE runs SET status = 'failed', error = ?, finished_at = ?, updated_at = ?"
                        " WHERE id = ? AND status = 'running'",
                        ["interrupted: the process running it stopped", now, now, run_id],
                    )
        return dead

    def remove_orphan_folders(self) -> int:
        """Delete run folders whose run no longer exists; returns how many."""
        uids = {uid for (uid,) in self._lib.db.execute("SELECT uid FROM runs")}
        orphans = [f for f in self._lib.layout.runs.iterdir() if f.name not in uids]
        for folder in orphans:
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
            else:
                folder.unlink(missing_ok=True)
        return len(orphans)

    def _folder_path(self, run_id: int) -> Path:
        row = self._lib.db.execute("SELECT uid FROM runs WHERE id = ?", [run_id]).fetchone()
        if row is None:
            raise NotFoundError(f"no training run {run_id}")
        return self._lib.layout.runs / row[0]

    def _require_status(self, run_id: int, *allowed: str) -> str:
        row = self._lib.db.execute("SELECT status FROM runs WHERE id = ?", [run_id]).fetchone()
        if row is None:
            raise NotFoundError(f"no training run {run_id}")
        if row[0] not in allowed:
            raise RunStateError(f"training run {run_id} is {row[0]}, not {' or '.join(allowed)}")
        return str(row[0])

    def _move(self, run_id: int, status: str, changes: dict[str, Any], sources: tuple[str, ...] = STATUSES) -> None:
        with self._lib.change(lock=True):
            current = self._require_status(run_id, *sources)
            if status not in _NEXT.get(current, ()):
                raise RunStateError(f"training run {run_id} is {current}; it cannot become {status}")
            self._lib.db["runs"].update(run_id, {**changes, "status": status, "updated_at": utc_now()})

    def _record(self, row: dict[str, Any]) -> Run:
        return Run(
            id=row["id"],
            uid=row["uid"],
            concept=row["concept"],
            config=loads(row["config"]),
            status=row["status"],
            progress=row["progress"],
            step=row["step"],
            total_steps=row["total_steps"],
            message=row["message"],
            metrics=loads(row["metrics"]),
            error=row["error"],
            pid=row["pid"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            updated_at=row["updated_at"],
            folder=self._lib.layout.runs / row["uid"],
        )


def _loss(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise InvalidValueError(f"a step's loss must be a number, not {value!r}")
    return float(value)


def _text(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidValueError(f"{what} must be text")
    if len(value) > MAX_MESSAGE_CHARS:
        return value[: MAX_MESSAGE_CHARS - 1] + "…"
    return value


_RUN_SELECT = "SELECT r.*, c.name AS concept FROM runs r JOIN concepts c ON c.id = r.concept_id"
