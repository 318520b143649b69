"""Background work across real processes: `ensemble worker`s and `ensemble serve` on one committed
database, exactly one scheduler leader among them, and webhooks reaching a receiver on loopback
while the leader is killed or loses its lock connection.

Every process is a real subprocess of the console script; the database is truncated afterwards.
"""

from __future__ import annotations

import functools
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from service.integrations.webhook_endpoints import webhook_id
from service.jobs.scheduler import LOCK_KEY
from tests.conftest import _truncate_all
from tests.programs_support import FIRST_TUESDAY
from tests.support import Headers, bearer
from tests.webhook_receiver import Receiver, free_port

ENSEMBLE = Path(sys.executable).with_name("ensemble")
TAKEOVER_LIMIT = 15.0  # DESIGN.md: standbys take over within 15 s
COMMIT_TO_RECEIPT_LIMIT = 2.0
NOTIFIED_LIMIT = 0.5  # the deliverer also polls every second; a woken one is much faster
STARTUP_LIMIT = 30.0

pytestmark = pytest.mark.skipif(not ENSEMBLE.exists(), reason=f"no console script at {ENSEMBLE}")


# --- processes ------------------------------------------------------------------------------


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    metrics_url: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def leads(self) -> bool:
        """What this process itself says: the `ensemble_scheduler_leader` gauge."""
        assert self.metrics_url is not None
        for line in httpx.get(self.metrics_url, timeout=5).text.splitlines():
            if line.startswith("ensemble_scheduler_leader "):
                return float(line.split()[1]) == 1.0
        raise AssertionError(f"{self.name} exposes no ensemble_scheduler_leader")

    def wait_or_kill(self, timeout: float) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)

    def log(self, lines: int = 80) -> str:
        parts = []
        for path in (self.stdout, self.stderr):
            text = path.read_text(errors="replace").splitlines() if path.exists() else []
            parts.append(f"--- {path.name} (last {lines} lines)\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)


@dataclass
class Cluster:
    """The processes of one test, all on the test database, stopped (and logged) afterwards."""

    database_url: str
    logs: Path
    processes: list[Process] = field(default_factory=list)
    clients: list[httpx.Client] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "ENSEMBLE_ENVIRONMENT": "development",
            "ENSEMBLE_WEBHOOK_ALLOW_PRIVATE": "true",
            "ENSEMBLE_WEBHOOK_RETRY_SCHEDULE": "1s,1s,1s",
            "STRIPE_API_KEY": "",
            "STRIPE_WEBHOOK_SECRET": "",
            **extra,
        }

    def start(self, name: str, *args: str, **env: str) -> Process:
        stdout, stderr = self.logs / f"{name}.out", self.logs / f"{name}.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            popen = subprocess.Popen(
                [str(ENSEMBLE), *args], env=self.env(**env), stdout=out, stderr=err
            )
        process = Process(name, popen, stdout, stderr)
        self.processes.append(process)
        return process

    def worker(self, name: str) -> Process:
        port = free_port()
        process = self.start(name, "worker", "--metrics-port", str(port))
        process.metrics_url = f"http://127.0.0.1:{port}/metrics"
        return process

    def api(self, name: str, *, scheduler: bool) -> Process:
        port = free_port()
        args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
        if not scheduler:
            args.append("--no-scheduler")
        process = self.start(name, *args, ENSEMBLE_SCHEDULER=str(scheduler).lower())
        process.metrics_url = f"http://127.0.0.1:{port}/metrics"
        return process

    def connect(self, server: Process) -> Api:
        """A client of `server` with a new admin key (minted by `ensemble create-key`)."""
        assert server.metrics_url is not None
        base = server.metrics_url.removesuffix("/metrics")
        client = httpx.Client(base_url=base, headers=self.admin_key(), timeout=30)
        self.clients.append(client)
        return Api(client)

    def admin_key(self) -> Headers:
        made = subprocess.run(
            [str(ENSEMBLE), "create-key", "--role", "admin", "--name", "worker test admin"],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        return bearer(made.stdout.strip().splitlines()[-1])

    def wait_until_up(self, *processes: Process) -> None:
        """Each process answers on its metrics port (workers) or API port (serve)."""
        for process in processes:
            assert process.metrics_url is not None
            wait_until(
                functools.partial(_answers, process),
                STARTUP_LIMIT,
                f"{process.name} to start",
                alive=processes,
            )

    def stop_all(self) -> None:
        for client in self.clients:
            client.close()
        for process in self.processes:
            if process.alive():
                process.popen.send_signal(signal.SIGTERM)
        for process in self.processes:
            process.wait_or_kill(10)


def _answers(process: Process) -> bool:
    assert process.metrics_url is not None
    try:
        return httpx.get(process.metrics_url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    *,
    alive: tuple[Process, ...] | list[Process] = (),
    every: float = 0.05,
) -> float:
    """Seconds until `condition()` held; fails after `timeout`, or when a process in `alive`
    exits on the way."""
    started = time.monotonic()
    while not condition():
        for process in alive:
            assert process.alive(), f"{process.name} exited while waiting for {what}"
        assert time.monotonic() - started < timeout, f"no {what} within {timeout} s"
        time.sleep(every)
    return time.monotonic() - started


@pytest.fixture
def cluster(database_url: str, tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(database_url, tmp_path)
    try:
        yield started
    finally:
        started.stop_all()
        # Shown by pytest only when the test fails.
        for process in started.processes:
            print(f"=== {process.name} (pid {process.pid}, exit {process.popen.returncode})")
            print(process.log())
        _truncate_all(database_url)


@pytest.fixture
def receiver(receiver: Receiver) -> Receiver:
    """The shared receiver, answering 200. Its default 204 comes with a 2-byte body, which a 204
    must not have: a client that reuses the connection (the deliverer does) reads those bytes
    as the start of its next answer and records a protocol error."""
    receiver.status = 200
    return receiver


# --- the API, as a client drives it ---------------------------------------------------------


@dataclass
class Posted:
    status: int
    program_id: str | None
    sent_at: float  # time.time()
    answered_at: float


@dataclass
class Api:
    http: httpx.Client

    def leader_pid(self) -> int | None:
        answer = self.http.get("/v1/jobs")
        assert answer.status_code == 200, answer.text
        leader = answer.json()["leader"]
        return None if leader is None else int(leader["pid"])

    def subscribe(self, receiver: Receiver, database_url: str) -> Outbox:
        """An endpoint for every event, at `receiver` (which learns its secret)."""
        answer = self.http.post(
            "/v1/webhook-endpoints", json={"url": receiver.url, "events": ["*"]}
        )
        assert answer.status_code == 201, answer.text
        receiver.secret = answer.json()["secret"]
        return Outbox(database_url, answer.json()["id"])

    def program_target(self) -> dict[str, str]:
        org = self.http.post(
            "/v1/organizations",
            json={
                "name": "Worker Test School",
                "kind": "school",
                "timezone": "America/Edmonton",
                "currency": "CAD",
                "tax_rate_bps": 500,
                "tax_label": "GST",
                "holiday_region": "CA-AB",
                "billing_email": "billing@school.example.org",
            },
        )
        assert org.status_code == 201, org.text
        offering = self.http.post(
            "/v1/offerings",
            json={
                "name": "Group music therapy",
                "format": "group",
                "duration_minutes": 60,
                "rate_cents": 20000,
                "currency": "CAD",
                "max_participants": 10,
            },
        )
        assert offering.status_code == 201, offering.text
        return {"organization_id": org.json()["id"], "offering_id": offering.json()["id"]}

    def request_program(self, target: dict[str, str]) -> Posted:
        """POST /v1/programs: one `program.requested` event, committed when the answer comes."""
        body = {
            **target,
            "title": "Calm classroom",
            "focus_areas": ["stress_anxiety"],
            "modality": "online",
            "video_url": "https://meet.example.org/calm",
            "participants": 1,
            "schedule": {
                "timezone": "America/Edmonton",
                "start_date": str(FIRST_TUESDAY),
                "start_time": "10:00",
                "rrule": "FREQ=WEEKLY;BYDAY=TU;COUNT=4",
            },
        }
        sent_at = time.time()
        try:
            answer = self.http.post("/v1/programs", json=body)
        except httpx.HTTPError as exc:
            print(f"POST /v1/programs: {exc!r}")
            return Posted(0, None, sent_at, time.time())
        answered_at = time.time()
        created = answer.json()["id"] if answer.status_code == 201 else None
        return Posted(answer.status_code, created, sent_at, answered_at)


class Burst:
    """`count` programs requested `concurrency` at a time, `pace` seconds apart, in the
    background; `done` grows as answers come."""

    def __init__(
        self, api: Api, target: dict[str, str], count: int, concurrency: int, pace: float = 0.0
    ) -> None:
        self.done: list[Posted] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, args=(api, target, count, concurrency, pace), daemon=True
        )

    def _run(
        self, api: Api, target: dict[str, str], count: int, concurrency: int, pace: float
    ) -> None:
        def one() -> None:
            posted = api.request_program(target)
            with self._lock:
                self.done.append(posted)

        with ThreadPoolExecutor(concurrency) as pool:
            for _ in range(count):
                pool.submit(one)
                time.sleep(pace)

    def start(self) -> Burst:
        self._thread.start()
        return self

    def finished(self) -> int:
        with self._lock:
            return len(self.done)

    def join(self, timeout: float) -> list[Posted]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the burst did not finish within {timeout} s"
        return self.done


def request_programs(
    api: Api, target: dict[str, str], count: int, concurrency: int
) -> list[Posted]:
    return Burst(api, target, count, concurrency).start().join(60)


# --- the database, inspected ----------------------------------------------------------------


def lock_holders(database_url: str) -> list[int]:
    """Backend pids holding the scheduler's advisory lock (a bigint key: classid is its high
    32 bits, objid its low 32 bits)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.pid FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s "
            "AND l.objsubid = 1 AND a.application_name = 'ensemble-scheduler' "
            "AND a.datname = current_database()",
            (LOCK_KEY >> 32, LOCK_KEY & 0xFFFF_FFFF),
        ).fetchall()
    return [row[0] for row in rows]


def scheduler_connections(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'ensemble-scheduler' AND datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class Outbox:
    """The deliveries to one endpoint, as the database has them."""

    database_url: str
    endpoint_id: str

    def _rows(self, where: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return conn.execute(
                "SELECT id, status, extract(epoch FROM next_attempt_at - now()) "
                f"FROM webhook_deliveries WHERE endpoint_id = %s {where}",
                (self.endpoint_id,),
            ).fetchall()

    def webhook_ids(self) -> set[str]:
        return {webhook_id(row[0]) for row in self._rows("")}

    def unfinished(self) -> dict[str, float]:
        """Deliveries not sent yet (none failed): id → seconds until due."""
        rows = self._rows("AND status <> 'succeeded'")
        assert all(row[1] == "pending" for row in rows), rows
        return {str(row[0]): float(row[2]) for row in rows}

    def make_due(self, ids: set[str]) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = now() "
                "WHERE id = ANY(%s) AND status = 'pending'",
                ([*ids],),
            )


# --- what the receiver got ------------------------------------------------------------------


def program_ids_by_webhook_id(receiver: Receiver) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for got in receiver.accepted():
        assert got.payload["type"] == "program.requested"
        seen.setdefault(got.webhook_id, set()).add(got.payload["data"]["id"])
    return seen


def wait_for_leader(api: Api, candidates: list[Process]) -> Process:
    by_pid = {p.pid: p for p in candidates}
    wait_until(
        lambda: api.leader_pid() in by_pid, STARTUP_LIMIT, "scheduler leader", alive=candidates
    )
    pid = api.leader_pid()
    assert pid is not None
    return by_pid[pid]


# --- the stories ----------------------------------------------------------------------------


def test_two_workers_and_an_api_process_deliver_each_event_exactly_once(
    cluster: Cluster, receiver: Receiver
) -> None:
    workers = [cluster.worker("worker-1"), cluster.worker("worker-2")]
    server = cluster.api("api", scheduler=True)
    everyone = [*workers, server]
    cluster.wait_until_up(*everyone)
    api = cluster.connect(server)
    leader = wait_for_leader(api, everyone)
    outbox = api.subscribe(receiver, cluster.database_url)
    target = api.program_target()

    posted = request_programs(api, target, count=40, concurrency=4)

    assert [p.status for p in posted] == [201] * 40
    wait_until(lambda: len(receiver.accepted()) >= 40, 20, "40 deliveries", alive=everyone)
    wait_until(lambda: not outbox.unfinished(), 10, "every delivery recorded")
    time.sleep(1.5)  # a second sender would have sent by now: its copy would show below
    assert all(r.verified for r in receiver.received)
    assert [r.answered for r in receiver.received] == [200] * 40
    ids = receiver.ids_accepted()
    assert set(ids.values()) == {1}
    assert set(ids) == outbox.webhook_ids()
    by_id = program_ids_by_webhook_id(receiver)
    assert sorted(len(programs) for programs in by_id.values()) == [1] * 40
    assert {p for programs in by_id.values() for p in programs} == {p.program_id for p in posted}
    # One leader all along, which the processes agree on; all three compete for the lock.
    assert api.leader_pid() == leader.pid
    assert [p.leads() for p in everyone] == [p is leader for p in everyone]
    assert len(lock_holders(cluster.database_url)) == 1
    assert scheduler_connections(cluster.database_url) == 3
    # Commit-to-receipt: from the API's answer (the commit is before it) to the receiver.
    arrived = {r.payload["data"]["id"]: r.at for r in receiver.accepted()}
    lags = [arrived[str(p.program_id)] - p.answered_at for p in posted]
    from_sent = [arrived[str(p.program_id)] - p.sent_at for p in posted]
    print(
        f"commit-to-receipt: median {statistics.median(lags):.3f} s, max {max(lags):.3f} s "
        f"(from the request sent: max {max(from_sent):.3f} s)"
    )
    assert max(lags) < COMMIT_TO_RECEIPT_LIMIT
    # One event at a time, each committed just after the last arrived: the leader is woken by
    # the commit's NOTIFY, well before its once-a-second poll would find the event.
    alone = []
    for n in range(41, 46):
        single = api.request_program(target)
        assert single.status == 201
        assert len(receiver.wait_for(n, timeout=5)) == n
        alone.append(receiver.accepted()[-1].at - single.answered_at)
    print(f"one at a time: {', '.join(f'{lag:.3f}' for lag in alone)} s")
    assert max(alone) < NOTIFIED_LIMIT


def test_killing_the_leader_during_a_burst_loses_no_event(
    cluster: Cluster, receiver: Receiver
) -> None:
    workers = [cluster.worker("worker-1"), cluster.worker("worker-2")]
    server = cluster.api("api", scheduler=False)
    cluster.wait_until_up(*workers, server)
    api = cluster.connect(server)
    leader = wait_for_leader(api, workers)
    (survivor,) = (w for w in workers if w is not leader)
    # A slow receiver keeps attempts in flight, so the kill lands mid-send.
    receiver.delay = 0.1
    outbox = api.subscribe(receiver, cluster.database_url)
    target = api.program_target()

    burst = Burst(api, target, count=60, concurrency=3, pace=0.05).start()
    wait_until(lambda: burst.finished() >= 20, 30, "20 programs requested")
    leader.popen.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()

    wait_until(
        lambda: api.leader_pid() == survivor.pid,
        TAKEOVER_LIMIT,
        "takeover by the survivor",
        alive=[survivor],
        every=0.02,
    )
    takeover = time.monotonic() - killed_at
    assert survivor.leads()
    posted = burst.join(30)
    assert [p.status for p in posted] == [201] * 60
    assert leader.popen.wait(5) == -signal.SIGKILL

    # What the dead leader had claimed stays leased to it (webhook_delivery.LEASE, 60 s) and is
    # then sent again. Once the survivor has sent everything else, end those leases now
    # instead of waiting them out.
    def only_leases_left() -> bool:
        return all(due > 30 for due in outbox.unfinished().values())

    wait_until(only_leases_left, 20, "the survivor to send everything not leased", every=0.2)
    time.sleep(1)
    assert only_leases_left()
    leased = set(outbox.unfinished())
    outbox.make_due(leased)
    wait_until(lambda: not outbox.unfinished(), 15, "every delivery sent")

    expected = outbox.webhook_ids()
    assert len(expected) == 60
    ids = receiver.ids_accepted()
    assert set(ids) == expected
    assert all(r.verified for r in receiver.received)
    # A duplicate is only ever a resend of one event to one endpoint: the same webhook-id.
    by_id = program_ids_by_webhook_id(receiver)
    assert sorted(len(programs) for programs in by_id.values()) == [1] * 60
    assert {p for programs in by_id.values() for p in programs} == {p.program_id for p in posted}
    duplicates = sum(n - 1 for n in ids.values())
    print(
        f"takeover {takeover:.2f} s after SIGKILL; {len(leased)} leases left by the dead leader; "
        f"{duplicates} duplicate(s), each a resend under its first webhook-id"
    )
    assert duplicates <= len(leased)


def test_a_standby_takes_over_when_the_leaders_connection_is_terminated(
    cluster: Cluster, receiver: Receiver
) -> None:
    workers = [cluster.worker("worker-1"), cluster.worker("worker-2")]
    server = cluster.api("api", scheduler=False)
    cluster.wait_until_up(*workers, server)
    api = cluster.connect(server)
    leader = wait_for_leader(api, workers)
    (standby,) = (w for w in workers if w is not leader)
    outbox = api.subscribe(receiver, cluster.database_url)
    target = api.program_target()
    wait_until(lambda: scheduler_connections(cluster.database_url) == 2, 10, "both lock askers")
    (holder,) = lock_holders(cluster.database_url)

    with psycopg.connect(cluster.database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (holder,))
    terminated_at = time.monotonic()
    during = request_programs(api, target, count=10, concurrency=2)  # nobody leads, or soon

    def new_leader() -> bool:
        holders = lock_holders(cluster.database_url)
        return len(holders) == 1 and holders[0] != holder

    wait_until(new_leader, TAKEOVER_LIMIT, "a new lock holder", alive=workers, every=0.02)
    took = time.monotonic() - terminated_at
    # Whichever asks first leads: nearly always the standby (the old leader waits out a retry
    # first); both processes live on and exactly one of them says it leads.
    wait_until(lambda: api.leader_pid() in {w.pid for w in workers}, 10, "the leader row")
    wait_until(lambda: sum(w.leads() for w in workers) == 1, 10, "one process leading")
    now_leading = next(w for w in workers if w.leads())
    assert api.leader_pid() == now_leading.pid
    after = request_programs(api, target, count=10, concurrency=2)

    posted = during + after
    assert [p.status for p in posted] == [201] * 20
    wait_until(lambda: len(receiver.accepted()) >= 20, 15, "20 deliveries", alive=workers)
    wait_until(lambda: not outbox.unfinished(), 10, "every delivery recorded")
    time.sleep(1.5)
    ids = receiver.ids_accepted()
    assert set(ids.values()) == {1}
    assert set(ids) == outbox.webhook_ids()
    assert all(r.verified for r in receiver.received)
    by_id = program_ids_by_webhook_id(receiver)
    assert {p for programs in by_id.values() for p in programs} == {p.program_id for p in posted}
    assert all(w.alive() for w in workers)
    print(
        f"new lock holder {took:.2f} s after pg_terminate_backend; now led by "
        f"{'the standby' if now_leading is standby else 'the old leader'}"
    )
