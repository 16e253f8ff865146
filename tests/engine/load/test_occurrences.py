from __future__ import annotations

import uuid
from typing import Any

import pytest

from prefect_restful_etl.tasks.engine.exceptions import StageError
from prefect_restful_etl.tasks.engine.load.occurrences import LastOccurrences
from prefect_restful_etl.tasks.engine.stage.base import StageKey
from prefect_restful_etl.tasks.engine.stage.memory import MemoryStage


def rec(key: str, n: int) -> dict[str, Any]:
    return {"id": key, "n": n}


@pytest.mark.parametrize(
    "records,chunk_size,kept",
    [
        ([rec("a", 1), rec("b", 2)], 10, [[1, 2]]),
        ([rec("a", 1), rec("a", 2), rec("b", 3)], 10, [[2, 3]]),
        ([rec("a", 1), rec("b", 2), rec("a", 3)], 2, [[2], [3]]),
        ([rec("a", 1), rec("a", 2), rec("a", 3), rec("b", 4)], 1, [[], [], [3], [4]]),
    ],
    ids=["distinct", "twice-in-a-chunk", "again-in-a-later-chunk", "one-a-chunk"],
)
async def test_only_each_keys_last_record_is_kept(records: list[dict], chunk_size: int, kept: list[list[int]]) -> None:
    stage, batch = MemoryStage(), str(uuid.uuid4())
    source = StageKey("t", batch, "extract")
    await stage.append(source, records)
    last = LastOccurrences(stage, StageKey("t", batch, "load").part("last"), ["id"])
    await last.record(source)  # the read's default chunk size: positions do not depend on it
    position, found = 0, []
    async for chunk in stage.read(source, chunk_size):
        found.append([r["n"] for r in (await last.latest(chunk, position)).values()])
        position += len(chunk)
    assert found == kept
    assert await last.contains(["a", "b", "c"]) == [True, True, False]
    await stage.drop_batch("t", batch)


async def test_positions_gone_from_the_stage_fail_rather_than_skip() -> None:
    stage, batch = MemoryStage(), str(uuid.uuid4())
    source = StageKey("t", batch, "extract")
    await stage.append(source, [rec("a", 1)])
    last = LastOccurrences(stage, StageKey("t", batch, "load").part("last"), ["id"])
    await last.record(source)
    await last.drop()  # as a stage's TTL would
    with pytest.raises(StageError, match="gone"):
        await last.latest([rec("a", 1)], 0)
    await stage.drop_batch("t", batch)
