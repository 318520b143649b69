"""The scheduler's shared state: which process leads, and each job's last run. Jobs themselves are
defined in code (service/jobs/); these rows let any API replica report on them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from models.base import sql_values, timestamp_field


class JobOutcome(StrEnum):
    succeeded = "succeeded"
    failed = "failed"


class JobState(SQLModel, table=True):
    __tablename__ = "job_states"
    __table_args__ = (
        CheckConstraint(f"last_outcome IN ({sql_values(JobOutcome)})", name="outcome"),
    )

    name: str = Field(primary_key=True, sa_type=String(40))
    next_run_at: datetime | None = timestamp_field(nullable=True)
    last_started_at: datetime | None = timestamp_field(nullable=True)
    last_finished_at: datetime | None = timestamp_field(nullable=True)
    last_outcome: str | None = Field(default=None, sa_type=String(10))
    last_detail: dict[str, Any] | None = Field(default=None, sa_type=JSONB)


class SchedulerLeader(SQLModel, table=True):
    """One row: the process holding the scheduler's advisory lock, refreshed by its heartbeat."""

    __tablename__ = "scheduler_leader"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: int = Field(default=1, primary_key=True, sa_type=Integer)
    pid: int = Field(sa_type=Integer)
    hostname: str = Field(sa_type=String(255))
    since: datetime = timestamp_field()
    heartbeat_at: datetime = timestamp_field()


class LastRun(SQLModel):
    started_at: datetime
    finished_at: datetime | None
    outcome: JobOutcome | None
    detail: dict[str, Any] | None


class JobRead(SQLModel):
    name: str
    description: str
    schedule: str
    next_run_at: datetime | None
    last_run: LastRun | None


class LeaderRead(SQLModel):
    pid: int
    hostname: str
    since: datetime


class JobList(SQLModel):
    data: list[JobRead]
    leader: LeaderRead | None
    next_cursor: str | None = None
