"""Organizations and their locations, as admin, coordinator, finance and therapist see them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from tests.support import Api, invalid_fields, ok, problem

FULL_ORGANIZATION = {
    "name": "Riverside Elementary",
    "kind": "school",
    "timezone": "America/Edmonton",
    "currency": "USD",
    "billing_email": "accounts@riverside.example.org",
    "tax_rate_bps": 500,
    "tax_label": "GST",
    "payment_terms_days": 45,
    "holiday_region": "CA-AB",
    "address": "12 River Road, Calgary AB",
}


async def create_org(api: Api, body: dict[str, Any]) -> httpx.Response:
    return await api.client.post("/v1/organizations", json=body, headers=api.admin)


async def organization_ids(api: Api) -> list[str]:
    page = ok(await api.client.get("/v1/organizations", headers=api.admin))
    return [org["id"] for org in page["data"]]


# Creating and reading


async def test_admin_creates_an_organization_with_every_field_and_reads_it_back(api: Api):
    created = ok(await create_org(api, FULL_ORGANIZATION), 201)

    got = ok(await api.client.get(f"/v1/organizations/{created['id']}", headers=api.admin))

    assert got == created
    assert {k: got[k] for k in FULL_ORGANIZATION} == FULL_ORGANIZATION
    assert got["created_at"].endswith(("+00:00", "Z"))


async def test_new_organization_defaults_to_cad_and_30_day_payment_terms(api: Api):
    created = ok(
        await create_org(
            api, {"name": "Bow Valley Clinic", "kind": "clinic", "timezone": "America/Edmonton"}
        ),
        201,
    )

    assert created["currency"] == "CAD"
    assert created["payment_terms_days"] == 30
    assert created["tax_rate_bps"] == 0
    assert created["billing_email"] is None
    assert created["holiday_region"] is None


async def test_holiday_region_subdivision_is_accepted_and_normalised_to_upper_case(api: Api):
    alberta = ok(await create_org(api, {**FULL_ORGANIZATION, "holiday_region": "ca-ab"}), 201)
    new_york = ok(await create_org(api, {**FULL_ORGANIZATION, "holiday_region": "us-ny"}), 201)

    assert alberta["holiday_region"] == "CA-AB"
    assert new_york["holiday_region"] == "US-NY"


async def test_currency_is_normalised_to_upper_case(api: Api):
    created = ok(await create_org(api, {**FULL_ORGANIZATION, "currency": "eur"}), 201)

    assert created["currency"] == "EUR"


# Validation: one 422 naming the field, and nothing saved


async def test_organization_with_unknown_time_zone_is_refused_naming_the_field(api: Api):
    response = await create_org(api, {**FULL_ORGANIZATION, "timezone": "Mars/Olympus_Mons"})

    body = problem(response, 422)
    assert body["errors"] == [
        {
            "field": "timezone",
            "message": "must be an IANA time zone such as America/Edmonton; "
            "got 'Mars/Olympus_Mons'",
            "type": "value_error",
            "in": "body",
        }
    ]


async def test_organization_with_a_time_zone_directory_name_is_refused(api: Api):
    response = await create_org(api, {**FULL_ORGANIZATION, "timezone": "America"})

    assert invalid_fields(response) == ["timezone"]


async def test_organization_time_zone_must_not_be_a_server_local_alias(api: Api):
    # "localtime" and "posixrules" are files on some servers, not IANA zone names: accepting
    # them would bill an organization in whatever zone the server happens to run in.
    for alias in ("localtime", "posixrules"):
        response = await create_org(api, {**FULL_ORGANIZATION, "timezone": alias})
        assert invalid_fields(response) == ["timezone"], alias


async def test_organization_in_a_zero_decimal_currency_is_refused(api: Api):
    response = await create_org(api, {**FULL_ORGANIZATION, "currency": "JPY"})

    assert invalid_fields(response) == ["currency"]


async def test_organization_in_a_made_up_currency_is_refused(api: Api):
    response = await create_org(api, {**FULL_ORGANIZATION, "currency": "ZZZ"})

    assert invalid_fields(response) == ["currency"]


async def test_negative_tax_rate_is_refused(api: Api):
    response = await create_org(api, {**FULL_ORGANIZATION, "tax_rate_bps": -1})

    assert invalid_fields(response) == ["tax_rate_bps"]


async def test_tax_rate_above_100_percent_is_refused_but_exactly_100_percent_is_accepted(api: Api):
    refused = await create_org(api, {**FULL_ORGANIZATION, "tax_rate_bps": 10001})
    accepted = ok(await create_org(api, {**FULL_ORGANIZATION, "tax_rate_bps": 10000}), 201)

    assert invalid_fields(refused) == ["tax_rate_bps"]
    assert accepted["tax_rate_bps"] == 10000


async def test_unknown_holiday_country_is_refused_naming_the_field(api: Api):
    response = await create_org(api, {**FULL_ORGANIZATION, "holiday_region": "XX-YY"})

    assert invalid_fields(response) == ["holiday_region"]


async def test_unknown_holiday_subdivision_of_a_known_country_is_refused(api: Api):
    response = await create_org(api, {**FULL_ORGANIZATION, "holiday_region": "CA-ZZ"})

    body = problem(response, 422)
    assert [e["field"] for e in body["errors"]] == ["holiday_region"]
    assert body["errors"][0]["message"] == "CA has no holiday subdivision 'ZZ'"


async def test_unknown_field_is_refused_rather_than_silently_dropped(api: Api):
    response = await create_org(api, {**FULL_ORGANIZATION, "vat_number": "GB123"})

    body = problem(response, 422)
    assert body["errors"] == [
        {
            "field": "vat_number",
            "message": "Extra inputs are not permitted",
            "type": "extra_forbidden",
            "in": "body",
        }
    ]


async def test_name_longer_than_200_characters_is_refused(api: Api):
    refused = await create_org(api, {**FULL_ORGANIZATION, "name": "x" * 201})
    accepted = ok(await create_org(api, {**FULL_ORGANIZATION, "name": "x" * 200}), 201)

    assert invalid_fields(refused) == ["name"]
    assert accepted["name"] == "x" * 200


async def test_nul_byte_in_a_string_is_a_422_not_a_database_error(api: Api):
    response = await create_org(api, {**FULL_ORGANIZATION, "address": "12 River\x00 Road"})

    body = problem(response, 422)
    assert body["errors"][0]["field"] == "address"
    assert body["errors"][0]["message"] == (
        "must be text without control characters (tabs and line breaks allowed)"
    )


async def test_malformed_billing_email_is_refused(api: Api):
    response = await create_org(api, {**FULL_ORGANIZATION, "billing_email": "accounts at school"})

    assert invalid_fields(response) == ["billing_email"]


async def test_missing_required_fields_are_each_named(api: Api):
    response = await create_org(api, {"currency": "CAD"})

    assert sorted(invalid_fields(response)) == ["kind", "name", "timezone"]


async def test_body_with_several_errors_gets_one_422_listing_each_field(api: Api):
    response = await create_org(
        api,
        {
            **FULL_ORGANIZATION,
            "timezone": "Nowhere/Town",
            "currency": "JPY",
            "tax_rate_bps": -5,
            "billing_email": "nope",
            "kind": "castle",
        },
    )

    assert sorted(invalid_fields(response)) == [
        "billing_email",
        "currency",
        "kind",
        "tax_rate_bps",
        "timezone",
    ]


async def test_nothing_is_created_when_an_organization_is_refused(api: Api):
    await api.make_org(name="Existing")
    before = await organization_ids(api)

    for bad in (
        {**FULL_ORGANIZATION, "timezone": "Bad/Zone"},
        {**FULL_ORGANIZATION, "currency": "JPY"},
        {**FULL_ORGANIZATION, "extra": True},
    ):
        problem(await create_org(api, bad), 422)

    assert await organization_ids(api) == before
    assert len(before) == 1


# Changing an organization


async def test_patch_changes_only_the_fields_sent(api: Api):
    org = ok(await create_org(api, FULL_ORGANIZATION), 201)

    patched = ok(
        await api.client.patch(
            f"/v1/organizations/{org['id']}",
            json={"name": "Riverside Middle", "tax_rate_bps": 1300},
            headers=api.admin,
        )
    )

    expected = {**org, "name": "Riverside Middle", "tax_rate_bps": 1300}
    changed = {k: v for k, v in patched.items() if k != "updated_at"}
    assert changed == {k: v for k, v in expected.items() if k != "updated_at"}
    assert datetime.fromisoformat(patched["updated_at"]) > datetime.fromisoformat(org["updated_at"])
    got = ok(await api.client.get(f"/v1/organizations/{org['id']}", headers=api.admin))
    assert got == patched


async def test_patch_with_null_clears_an_optional_field(api: Api):
    org = ok(await create_org(api, FULL_ORGANIZATION), 201)

    patched = ok(
        await api.client.patch(
            f"/v1/organizations/{org['id']}",
            json={"billing_email": None, "holiday_region": None, "address": None},
            headers=api.admin,
        )
    )

    assert patched["billing_email"] is None
    assert patched["holiday_region"] is None
    assert patched["address"] is None
    assert patched["name"] == FULL_ORGANIZATION["name"]


async def test_patch_with_null_for_a_required_field_is_refused_and_changes_nothing(api: Api):
    org = ok(await create_org(api, FULL_ORGANIZATION), 201)

    response = await api.client.patch(
        f"/v1/organizations/{org['id']}",
        json={"name": None, "currency": None, "address": "New address"},
        headers=api.admin,
    )

    assert sorted(invalid_fields(response)) == ["currency", "name"]
    got = ok(await api.client.get(f"/v1/organizations/{org['id']}", headers=api.admin))
    assert got == org


async def test_patch_with_an_invalid_value_names_the_field(api: Api):
    org = ok(await create_org(api, FULL_ORGANIZATION), 201)

    response = await api.client.patch(
        f"/v1/organizations/{org['id']}",
        json={"payment_terms_days": 366, "timezone": "Atlantis/Central"},
        headers=api.admin,
    )

    assert sorted(invalid_fields(response)) == ["payment_terms_days", "timezone"]


async def test_patch_records_an_audit_event_with_the_state_before_and_after(api: Api):
    org = ok(await create_org(api, FULL_ORGANIZATION), 201)

    ok(
        await api.client.patch(
            f"/v1/organizations/{org['id']}", json={"tax_rate_bps": 0}, headers=api.admin
        )
    )

    events = ok(
        await api.client.get("/v1/audit-events", params={"entity_id": org["id"]}, headers=api.admin)
    )["data"]
    assert [e["action"] for e in events] == ["organization.created", "organization.updated"]
    updated = events[1]
    assert updated["entity_type"] == "organization"
    assert updated["actor_role"] == "admin"
    assert updated["organization_id"] == org["id"]
    assert updated["before"]["tax_rate_bps"] == 500
    assert updated["after"]["tax_rate_bps"] == 0
    assert updated["before"]["name"] == updated["after"]["name"] == FULL_ORGANIZATION["name"]


async def test_patch_of_an_unknown_organization_is_404(api: Api):
    response = await api.client.patch(
        "/v1/organizations/00000000-0000-4000-8000-000000000000",
        json={"name": "Ghost"},
        headers=api.admin,
    )

    problem(response, 404)


async def test_malformed_organization_id_is_a_422_naming_the_path_parameter(api: Api):
    response = await api.client.get("/v1/organizations/not-a-uuid", headers=api.admin)

    body = problem(response, 422)
    assert [(e["field"], e["in"]) for e in body["errors"]] == [("organization_id", "path")]


# Roles


async def test_coordinator_may_change_their_own_organizations_contact_details(api: Api):
    org = ok(await create_org(api, FULL_ORGANIZATION), 201)
    coordinator = await api.coordinator(org["id"])

    patched = ok(
        await api.client.patch(
            f"/v1/organizations/{org['id']}",
            json={"address": "99 New Street", "billing_email": "AP@Riverside.example.org"},
            headers=coordinator,
        )
    )

    assert patched["address"] == "99 New Street"
    assert patched["billing_email"] == "ap@riverside.example.org"


async def test_coordinator_may_not_change_billing_terms_and_nothing_changes(api: Api):
    org = ok(await create_org(api, FULL_ORGANIZATION), 201)
    coordinator = await api.coordinator(org["id"])

    for field, value in (("tax_rate_bps", 0), ("currency", "CAD"), ("payment_terms_days", 90)):
        response = await api.client.patch(
            f"/v1/organizations/{org['id']}",
            json={field: value, "address": "Sneaky Street"},
            headers=coordinator,
        )
        assert field in problem(response, 403)["detail"]

    got = ok(await api.client.get(f"/v1/organizations/{org['id']}", headers=api.admin))
    assert got == org


async def test_coordinator_sees_only_their_own_organization(api: Api):
    mine = await api.make_org(name="Mine")
    theirs = await api.make_org(name="Theirs")
    coordinator = await api.coordinator(mine["id"])

    listed = ok(await api.client.get("/v1/organizations", headers=coordinator))
    other = await api.client.get(f"/v1/organizations/{theirs['id']}", headers=coordinator)
    other_patch = await api.client.patch(
        f"/v1/organizations/{theirs['id']}", json={"address": "x"}, headers=coordinator
    )

    assert [o["id"] for o in listed["data"]] == [mine["id"]]
    problem(other, 404)
    problem(other_patch, 404)


async def test_coordinator_cannot_create_organizations(api: Api):
    org = await api.make_org()
    coordinator = await api.coordinator(org["id"])

    response = await api.client.post(
        "/v1/organizations", json=FULL_ORGANIZATION, headers=coordinator
    )

    problem(response, 403)


async def test_finance_reads_organizations_but_cannot_change_them(api: Api):
    org = ok(await create_org(api, FULL_ORGANIZATION), 201)
    finance = await api.key("finance")

    listed = ok(await api.client.get("/v1/organizations", headers=finance))
    got = ok(await api.client.get(f"/v1/organizations/{org['id']}", headers=finance))
    patch = await api.client.patch(
        f"/v1/organizations/{org['id']}", json={"address": "Finance Street"}, headers=finance
    )

    assert [o["id"] for o in listed["data"]] == [org["id"]]
    assert got == org
    problem(patch, 403)
    assert ok(await api.client.get(f"/v1/organizations/{org['id']}", headers=api.admin)) == org


async def test_therapist_is_refused_organizations(api: Api):
    org = await api.make_org()
    therapist = await api.make_therapist()
    as_therapist = await api.therapist_key(therapist["id"])

    listed = await api.client.get("/v1/organizations", headers=as_therapist)
    got = await api.client.get(f"/v1/organizations/{org['id']}", headers=as_therapist)
    patched = await api.client.patch(
        f"/v1/organizations/{org['id']}", json={"address": "x"}, headers=as_therapist
    )
    created = await api.client.post(
        "/v1/organizations", json=FULL_ORGANIZATION, headers=as_therapist
    )

    for response in (listed, got, patched, created):
        problem(response, 403)


async def test_request_without_an_api_key_is_401(api: Api):
    response = await api.client.get("/v1/organizations")

    problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


# Locations


async def test_admin_adds_locations_and_lists_them_in_creation_order(api: Api):
    org = await api.make_org()

    gym = ok(
        await api.client.post(
            f"/v1/organizations/{org['id']}/locations",
            json={"name": "Gym", "address": "12 River Road", "timezone": "America/Edmonton"},
            headers=api.admin,
        ),
        201,
    )
    library = await api.make_location(org["id"], name="Library")
    listed = ok(await api.client.get(f"/v1/organizations/{org['id']}/locations", headers=api.admin))

    assert gym["organization_id"] == org["id"]
    assert gym["name"] == "Gym"
    assert gym["address"] == "12 River Road"
    assert gym["timezone"] == "America/Edmonton"
    assert [loc["name"] for loc in listed["data"]] == ["Gym", "Library"]
    assert listed["data"][1] == library
    assert listed["next_cursor"] is None


async def test_coordinator_adds_a_location_to_their_own_organization_only(api: Api):
    mine = await api.make_org()
    theirs = await api.make_org()
    coordinator = await api.coordinator(mine["id"])
    body = {"name": "Music Room", "timezone": "America/Edmonton"}

    added = await api.client.post(
        f"/v1/organizations/{mine['id']}/locations", json=body, headers=coordinator
    )
    elsewhere = await api.client.post(
        f"/v1/organizations/{theirs['id']}/locations", json=body, headers=coordinator
    )

    assert ok(added, 201)["organization_id"] == mine["id"]
    problem(elsewhere, 404)
    listed = ok(
        await api.client.get(f"/v1/organizations/{theirs['id']}/locations", headers=api.admin)
    )
    assert listed["data"] == []


async def test_location_with_a_bad_time_zone_is_refused_and_not_saved(api: Api):
    org = await api.make_org()

    response = await api.client.post(
        f"/v1/organizations/{org['id']}/locations",
        json={"name": "Gym", "timezone": "Gym/Time"},
        headers=api.admin,
    )

    assert invalid_fields(response) == ["timezone"]
    listed = ok(await api.client.get(f"/v1/organizations/{org['id']}/locations", headers=api.admin))
    assert listed["data"] == []


async def test_location_with_an_unknown_field_is_refused(api: Api):
    org = await api.make_org()

    response = await api.client.post(
        f"/v1/organizations/{org['id']}/locations",
        json={"name": "Gym", "timezone": "America/Edmonton", "capacity": 30},
        headers=api.admin,
    )

    assert invalid_fields(response) == ["capacity"]
