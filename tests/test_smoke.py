from tests.support import Api, ok


async def test_admin_creates_an_organization_and_reads_it_back(api: Api):
    org = await api.make_org(name="Riverside School")
    got = ok(await api.client.get(f"/v1/organizations/{org['id']}", headers=api.admin))
    assert got["name"] == "Riverside School"
    assert got["currency"] == "CAD"
