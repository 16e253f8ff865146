"""Two entries of the reference tried as a new user would: the configuration copied from the page, adapted only
where the page's field table says how, against a real third-party server.

- paging.md `page_number` with its total in a header, against the Mockoon CLI (`X-Total-Count`, `page`/`limit`);
- auth.md `login`, against PocketBase's superuser login, paging its records as paging.md's fields say.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr
from reference_support import entry

from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.http.client import RestClient

from fixtures.mockoon_server import MockoonFactory
from fixtures.servers.pocketbase import PocketBaseServer

pytestmark = pytest.mark.integration


def _header_total_example() -> dict[str, Any]:
    found = [c for c in entry("paging.md", "`page_number`").configurations() if "total_header" in c]
    assert found, "paging.md shows no page_number example with its total in a header"
    return dict(found[0])


async def _read_all(api: ApiConfig, path: str, credentials: Credentials | None = None, **options: Any) -> list[Any]:
    async with RestClient(api, credentials) as client:
        return [record async for page in client.paginate(path, **options) for record in page]


@pytest.mark.parametrize("concurrent", [False, True], ids=["one page at a time", "planned from the total"])
async def test_the_header_total_example_reads_a_mockoon_crud_route_whole(
    mockoon: MockoonFactory, concurrent: bool
) -> None:
    rows = [{"id": n, "name": f"customer {n}"} for n in range(1, 251)]
    server = mockoon({"customers": rows})
    paginator = {**_header_total_example(), "concurrent": concurrent}  # the page's example, as it stands
    api = ApiConfig.model_validate({"name": "mock", "base_url": server.url, "paginator": paginator})
    assert api.paginator.page_size == 100  # the default the page gives: three pages of the 250
    assert await _read_all(api, "/customers") == rows


async def test_the_login_example_logs_in_to_pocketbase_and_pages_its_records(
    pocketbase_server: PocketBaseServer, unique_name: str
) -> None:
    pb, name = pocketbase_server, f"{unique_name}_reference"
    pb.create_collection(name, [{"name": "external_id", "type": "text"}], unique=["external_id"])
    for key in range(7):
        pb.create(name, {"external_id": f"k{key}"})
    login = entry("auth.md", "`login`").configurations()[0]  # PocketBase's superuser login, as the page has it
    # paging.md's page_number fields, named as PocketBase names them (`perPage`, `totalItems`)
    paginator = {"type": "page_number", "size_param": "perPage", "page_size": 3, "total_path": "totalItems",
                 "concurrent": True}  # fmt: skip
    api = ApiConfig.model_validate({"name": "pb", "base_url": pb.url, "auth": login, "paginator": paginator})
    credentials = Credentials(username=pb.email, password=SecretStr(pb.password))
    path = f"/api/collections/{name}/records"
    found = await _read_all(api, path, credentials, params={"sort": "external_id"}, records_path="items")
    assert [record["external_id"] for record in found] == [f"k{key}" for key in range(7)]
