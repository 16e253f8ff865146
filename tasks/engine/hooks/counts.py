"""The intake's counts per tenant and batch type (accepted, duplicates, refused by reason), kept on the stage.

Each receiver writes its own fields of one index, `<receiver>.<count>` -> total, so several receivers never
overwrite each other's and no backend needs an atomic increment; a reader adds them up.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from prefect_restful_etl.tasks.engine.hooks.intake import Intake

ACCEPTED, DUPLICATES = "accepted", "duplicates"
REFUSED = "refused"  # refused.<reason>: too_large, not_json, signature, stale, rate, shape, stage
BATCHED, MICRO_BATCHES, FAILED = "batched", "micro_batches", "failed_micro_batches"


class IntakeCounts:
    """Counted in memory as hooks arrive, written to the stage by `flush` (the receiver calls it every second)."""

    def __init__(self, intake: Intake) -> None:
        self.intake = intake
        self._totals: dict[tuple[str, str], Counter[str]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._loaded: set[tuple[str, str]] = set()

    def add(self, tenant: str, batch_type: str, name: str, count: int = 1) -> None:
        self._totals.setdefault((tenant, batch_type), Counter())[name] += count
        self._dirty.add((tenant, batch_type))

    def snapshot(self) -> dict[str, dict[str, int]]:
        """This receiver's counts since it started, `<batch type>/<tenant>` -> counts (its status page)."""
        return {f"{bt}/{tenant}": dict(counts) for (tenant, bt), counts in sorted(self._totals.items())}

    async def flush(self) -> None:
        """Write the changed totals: this receiver's earlier totals (from before a restart) are added once."""
        for group in sorted(self._dirty):
            self._dirty.discard(group)
            tenant, batch_type = group
            key = self.intake.key(tenant, batch_type, "counts")
            if group not in self._loaded:
                self._loaded.add(group)
                before = await totals_of(self.intake, tenant, batch_type, receiver=self.intake.receiver)
                self._totals[group].update(before)
            mine = {f"{self.intake.receiver}.{name}": str(value) for name, value in self._totals[group].items()}
            await self.intake.stage.index_put(key, mine)


async def totals_of(intake: Intake, tenant: str, batch_type: str, *, receiver: str | None = None) -> dict[str, int]:
    """Every receiver's counts added up (or one receiver's), by count name."""
    totals: Counter[str] = Counter()
    async for chunk in intake.stage.index_scan(intake.key(tenant, batch_type, "counts")):
        for field, value in chunk.items():
            owner, _, name = field.partition(".")
            if receiver is None or owner == receiver:
                totals[name] += _int(value)
    return dict(sorted(totals.items()))


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
