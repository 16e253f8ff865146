"""The shape of one read of a positional stream: two reads alike are equal, a move or a changed copy is not."""

from __future__ import annotations

from typing import Any

import pytest

from prefect_restful_etl.tasks.engine.extract.reads import ReadKeys, ReadShape
from prefect_restful_etl.tasks.engine.stage.base import StageKey
from prefect_restful_etl.tasks.engine.stage.memory import MemoryStage

A, B, C, D = ({"id": n, "email": f"{n}@example.com"} for n in "abcd")
A_AGAIN = {"id": "a2", "email": A["email"]}  # another record with A's natural key (email)


async def shape(pages: list[list[dict[str, Any]]], fields: list[str]) -> ReadShape:
    reads = ReadKeys(MemoryStage(), StageKey("t", "b", "j.read"), fields)
    for page in pages:
        await reads.read(page)
    read = reads.shape()
    await reads.drop()
    assert reads.shape() == ReadShape(0, ())  # dropped: the next read starts afresh
    return read


SAME_DUPLICATE = [[A, B], [C, A_AGAIN]]


@pytest.mark.parametrize(
    "first,second,alike",
    [
        pytest.param(SAME_DUPLICATE, SAME_DUPLICATE, True, id="the-source's-duplicate-twice"),
        pytest.param([[A, B], [B, C]], [[A, B], [C, D]], False, id="a-move-then-none"),
        pytest.param(SAME_DUPLICATE, [[A, B], [A_AGAIN, C]], False, id="the-duplicate-elsewhere"),
        pytest.param(SAME_DUPLICATE, [[A, B], [C, {**A_AGAIN, "phone": "1"}]], False, id="its-copy-changed"),
        pytest.param([[A, B], [C, D]], [[A, B], [D, C]], False, id="another-order"),
    ],
)
async def test_two_reads_are_alike_only_with_the_same_keys_in_the_same_places(
    first: list[list[dict[str, Any]]], second: list[list[dict[str, Any]]], alike: bool
) -> None:
    assert (await shape(first, ["email"]) == await shape(second, ["email"])) is alike


@pytest.mark.parametrize(
    "pages,repeated,first_page",
    [
        pytest.param([[A, B], [C, D]], (), 0, id="none"),
        pytest.param([[A, A_AGAIN], [C]], (A["email"],), 1, id="on-one-page"),
        pytest.param([[A, B], [C], [B, A_AGAIN]], (B["email"], A["email"]), 3, id="across-pages"),
        pytest.param([[{"id": 1}, {"id": 2}]], (), 0, id="keyless-never-repeat"),
    ],
)
async def test_a_read_names_the_keys_it_met_twice_and_where_first(
    pages: list[list[dict[str, Any]]], repeated: tuple[str, ...], first_page: int
) -> None:
    read = await shape(pages, ["email"])
    assert (read.repeated, read.first_page) == (repeated, first_page)
