"""Contracts kept honest: the committed OpenAPI document and the migrations match the code."""

from __future__ import annotations

import json
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlmodel import SQLModel

import models.registry  # noqa: F401
from service.app import create_app
from service.core import migrate
from service.core.db import sqlalchemy_url

ROOT = Path(__file__).resolve().parent.parent


def test_committed_openapi_matches_the_app():
    committed = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    assert committed == create_app().openapi(), "run `make openapi` and commit the result"


def test_every_operation_has_a_stable_unique_id_and_a_description():
    spec = create_app().openapi()
    ids = [op["operationId"] for path in spec["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))
    assert all(
        op.get("description") or op.get("summary")
        for path in spec["paths"].values()
        for op in path.values()
    )


def test_migrations_build_exactly_the_schema_the_models_describe(scratch_database):
    url = scratch_database("ensemble_migration_check")
    migrate.upgrade(url)
    engine = create_engine(sqlalchemy_url(url))
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []
    engine.dispose()


def test_migrations_downgrade_to_nothing_and_back(scratch_database):
    url = scratch_database("ensemble_migration_roundtrip")
    migrate.upgrade(url)
    migrate.downgrade(url, "base")
    engine = create_engine(sqlalchemy_url(url))
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()
    migrate.upgrade(url)
    engine = create_engine(sqlalchemy_url(url))
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()
    engine.dispose()
