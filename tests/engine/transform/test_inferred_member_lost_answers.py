"""Inferred members whose creates lose their answers, against the demo accounting API on real sockets: the demo
stores the member, then answers 429 or 5xx or drops the connection, so the lookup cannot tell that it landed.
The key is looked up before the member is sent again: no member is created twice, and none is lost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from engine_support import batch_context
from load_support import Accounting
from pydantic import SecretStr, TypeAdapter

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import RetriableError
from prefect_restful_etl.tasks.engine.transform.lookup_config import LookupConfig, open_lookup_sources
from prefect_restful_etl.tasks.engine.transform.lookups import ApiLookup

pytestmark = pytest.mark.integration

CONFIG = TypeAdapter(LookupConfig).validate_python(
    {
        "type": "api",
        "api": "accounting",
        "endpoint": {"path": "/customers", "records_path": "data"},
        "key_field": "external_id",
        "value_field": "id",
        "create": True,
    }
)
PLACEHOLDER = {"name": "Unknown customer", "email": "unknown@example.com"}
CREATE = {"path": "/customers", "method": "POST"}


@pytest.fixture
def accounting(demo_state: DemoApis, tmp_path: Path) -> Accounting:
    return Accounting(demo_state, tmp_path, tenant="inferred")


async def infer(accounting: Accounting, tmp_path: Path, key: str) -> tuple[Any, ApiLookup]:
    credentials = Credentials(api_key=SecretStr(accounting.apis.accounting_api_key))
    async with batch_context(tmp_path, {"accounting": (accounting.api, credentials)}) as ctx:
        source = open_lookup_sources({"customers": CONFIG}, ctx)["customers"]
        assert isinstance(source, ApiLookup)
        return await source.create_member(key, PLACEHOLDER), source


@pytest.mark.parametrize(
    "fault,sent",
    [
        # it landed, and its answer was lost: found by the look-up, never sent again
        ({**CREATE, "status": 429, "after": True}, 1),
        ({**CREATE, "status": 503, "after": True}, 1),
        ({**CREATE, "drop": True, "after": True}, 1),
        # refused before the API acted (a rate limiter's 429, a 503): the look-up finds nothing, so it is sent again
        ({**CREATE, "status": 429}, 2),
        ({**CREATE, "status": 503}, 2),
    ],
    ids=["landed-429", "landed-5xx", "landed-dropped", "refused-429", "refused-5xx"],
)
async def test_an_inferred_member_is_created_once_whatever_became_of_its_answer(
    accounting: Accounting, tmp_path: Path, fault: dict[str, Any], sent: int
) -> None:
    accounting.fault(**fault)
    value, source = await infer(accounting, tmp_path, "77")
    rows = [r for r in accounting.rows() if r["external_id"] == "77"]
    assert len(rows) == 1, "one member, neither duplicated nor lost"
    assert value == rows[0]["id"] and source.created == 1
    assert accounting.requests()["POST /customers"] == sent
    assert accounting.statuses()["dropped" if fault.get("drop") else str(fault["status"])] == 1, "the fault fired"


async def test_an_inferred_member_refused_at_every_attempt_fails_the_job(
    accounting: Accounting, tmp_path: Path
) -> None:
    """The destination is down, not the record: the job fails (a rerun converges), after one look-up per refusal."""
    accounting.fault(**CREATE, status=503, times=10)
    with pytest.raises(RetriableError):
        await infer(accounting, tmp_path, "78")
    assert not [r for r in accounting.rows() if r["external_id"] == "78"]
    assert accounting.requests()["POST /customers"] == accounting.api.max_attempts
