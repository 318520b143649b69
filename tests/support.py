"""Factories and role helpers. Data is made through the API itself, as a client would."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from models.api_keys import ApiKeyCreate
from models.types import Role
from service.catalog import api_keys
from service.core.auth import SYSTEM

Headers = dict[str, str]
_serial = itertools.count(1)
ALL_WEEK = [
    {"weekday": day, "start": "00:00", "end": "23:59"}
    for day in ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
]


def bearer(secret: str) -> Headers:
    return {"Authorization": f"Bearer {secret}"}


PROBLEM_JSON = "application/problem+json"


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The RFC 9457 body of an error response, after checking its status and shape."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://")
    assert body["title"]
    assert body["detail"]
    return body


def invalid_fields(response: httpx.Response) -> list[str]:
    """The fields a 422 names, in the order it names them."""
    return [error["field"] for error in problem(response, 422)["errors"]]


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json()


@dataclass
class Api:
    client: httpx.AsyncClient
    admin: Headers

    @classmethod
    async def start(cls, client: httpx.AsyncClient, db: AsyncSession) -> Api:
        created = await api_keys.create(
            db, SYSTEM, ApiKeyCreate(name="test admin", role=Role.admin)
        )
        await db.commit()
        return cls(client=client, admin=bearer(created.key))

    async def key(self, role: str, **scope: Any) -> Headers:
        body = {
            "name": f"{role} key {next(_serial)}",
            "role": role,
            **{k: str(v) for k, v in scope.items()},
        }
        return bearer(
            ok(await self.client.post("/v1/api-keys", json=body, headers=self.admin), 201)["key"]
        )

    async def coordinator(self, org_id: str) -> Headers:
        return await self.key("coordinator", organization_id=org_id)

    async def therapist_key(self, therapist_id: str) -> Headers:
        return await self.key("therapist", therapist_id=therapist_id)

    async def make_org(self, **overrides: Any) -> dict[str, Any]:
        body = {
            "name": f"Org {next(_serial)}",
            "kind": "school",
            "timezone": "America/Edmonton",
            "currency": "CAD",
            "tax_rate_bps": 500,
            "tax_label": "GST",
            "holiday_region": "CA-AB",
            "billing_email": "billing@school.example.org",
            **overrides,
        }
        return ok(await self.client.post("/v1/organizations", json=body, headers=self.admin), 201)

    async def make_location(self, org_id: str, **overrides: Any) -> dict[str, Any]:
        body = {"name": f"Room {next(_serial)}", "timezone": "America/Edmonton", **overrides}
        return ok(
            await self.client.post(
                f"/v1/organizations/{org_id}/locations", json=body, headers=self.admin
            ),
            201,
        )

    async def make_therapist(
        self, *, availability: list[dict[str, str]] | None = None, **overrides: Any
    ) -> dict[str, Any]:
        """A therapist, available every day 00:00-23:59 unless `availability` says otherwise."""
        n = next(_serial)
        body = {
            "name": f"Therapist {n}",
            "email": f"therapist{n}@ensemble.example",
            "credentials": ["MTA"],
            "specialties": ["stress_anxiety"],
            "timezone": "America/Edmonton",
            **overrides,
        }
        therapist = ok(await self.client.post("/v1/therapists", json=body, headers=self.admin), 201)
        windows = ALL_WEEK if availability is None else availability
        ok(
            await self.client.put(
                f"/v1/therapists/{therapist['id']}/availability", json=windows, headers=self.admin
            )
        )
        return therapist

    async def make_offering(self, **overrides: Any) -> dict[str, Any]:
        body = {
            "name": f"Offering {next(_serial)}",
            "format": "group",
            "duration_minutes": 60,
            "rate_cents": 20000,
            "currency": "CAD",
            "max_participants": 10,
            **overrides,
        }
        return ok(await self.client.post("/v1/offerings", json=body, headers=self.admin), 201)


def forget_committed(database_url: str, *, key_names: list[str], org_prefix: str = "") -> None:
    """Remove what a test committed outside the rolled-back test transaction: the API keys
    named, organizations whose name starts with `org_prefix`, and their audit rows."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        if org_prefix:
            conn.execute(
                "DELETE FROM audit_events WHERE organization_id IN "
                "(SELECT id FROM organizations WHERE name LIKE %s)",
                (org_prefix + "%",),
            )
            conn.execute("DELETE FROM organizations WHERE name LIKE %s", (org_prefix + "%",))
        conn.execute(
            "DELETE FROM audit_events WHERE entity_id IN "
            "(SELECT id FROM api_keys WHERE name = ANY(%s)) OR actor_key_id IN "
            "(SELECT id FROM api_keys WHERE name = ANY(%s))",
            (key_names, key_names),
        )
        conn.execute("DELETE FROM api_keys WHERE name = ANY(%s)", (key_names,))
