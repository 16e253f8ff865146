"""The durable intake: accepted hooks rest on the stage, in segments, before the receiver answers 202.

Per tenant and batch type, a receiver appends each accepted event to its *open segment* (a list on the stage);
a micro-batch is given the segments *sealed* before it started, so events arriving meanwhile wait in the next
one. Every key is one of the stage's, under the tenant's own part, so no tenant reaches another's events:

```
restful-etl:acme:hooks-crm-to-accounting-main-000001767225600123:events   LIST  {"event_id": "evt_1", ...}
restful-etl:acme:hooks-crm-to-accounting:registry-main-a    INDEX  <segment> -> open | sealed | done
restful-etl:acme:hooks-crm-to-accounting:head-main          INDEX  registry -> a | b
restful-etl:acme:hooks-crm-to-accounting:seen-6818          INDEX  <event id> -> <segment> (per dedupe_days)
restful-etl:acme:hooks-crm-to-accounting:counts             INDEX  main.accepted -> 1042, main.duplicates -> 3
```
Only the receiver named `receiver` writes its registry, so the registry needs no lock across processes. An
event's list entry is appended before its id is remembered: a receiver killed between the two has stored the
event and forgets only that it did, so the source's retry is stored again and the micro-batch drops the repeat
(by event id); the reverse order would lose it. Only the stage's interface is used, so any durable backend
(Redis, MongoDB) holds the intake.
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from prefect_restful_etl.tasks.engine.exceptions import StageError, StageUnavailable
from prefect_restful_etl.tasks.engine.stage.base import Stage, StageKey

OPEN, SEALED, DONE = "open", "sealed", "done"
_COMPACT_AFTER = 20  # done segments a registry keeps before it is rewritten without them
Group = tuple[str, str]  # (tenant, batch type)


@functools.lru_cache(maxsize=4096)
def _key(tenant: str, batch: str, job: str, prefix: str) -> StageKey:
    """Keys are checked when built (StageKey's rules): built once per name, not once per hook."""
    return StageKey(tenant, batch, job, prefix)


def home(batch_type: str) -> str:
    """The batch part of a batch type's intake keys: `hooks-crm-to-accounting`."""
    return f"hooks-{batch_type}"


class Intake:
    """One receiver's intake over a stage: `accept`, `seal`, `done`, and the reads of a micro-batch."""

    def __init__(
        self, stage: Stage, receiver: str = "main", *, dedupe_days: int = 3, clock: Callable[[], float] = time.time
    ) -> None:
        self.stage, self.receiver, self.dedupe_days, self.clock = stage, receiver, dedupe_days, clock
        self.prefix = str(getattr(stage, "prefix", StageKey.prefix))
        self._open: dict[Group, str] = {}
        self._inflight: Counter[str] = Counter()
        self._settled: dict[str, asyncio.Event] = {}
        self._event_locks: weakref.WeakValueDictionary[tuple[str, str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._registry_locks: dict[Group, asyncio.Lock] = {}
        self._last_sequence = 0

    # --- keys ---------------------------------------------------------------------------------------------

    def key(self, tenant: str, batch_type: str, name: str) -> StageKey:
        return _key(tenant, home(batch_type), name, self.prefix)

    def events_key(self, tenant: str, batch_type: str, segment: str) -> StageKey:
        return _key(tenant, f"{home(batch_type)}-{segment}", "events", self.prefix)

    def _seen_keys(self) -> list[str]:
        """This window's and the last one's: each window spans `dedupe_days`, so an id is remembered at least that
        long (and at most twice that), for two lookups a hook whatever the number of days."""
        window = int(self.clock() // (86400 * self.dedupe_days))
        return [f"seen-{window}", f"seen-{window - 1}"]

    # --- intake ----------------------------------------------------------------------------------------------

    async def accept(self, tenant: str, batch_type: str, event_id: str, entry: dict[str, Any]) -> str | None:
        """Store the event in the open segment and return the segment; None when its id was stored before."""
        lock = self._event_locks.setdefault((tenant, batch_type, event_id), asyncio.Lock())
        async with lock:  # one process never stores one event twice; across receivers the micro-batch drops repeats
            if await self.seen(tenant, batch_type, event_id):
                return None
            segment = await self._open_segment(tenant, batch_type)
            self._inflight[segment] += 1
            try:
                await self.stage.append(self.events_key(tenant, batch_type, segment), [{**entry, "event_id": event_id}])
            finally:
                self._inflight[segment] -= 1
                if not self._inflight[segment]:
                    del self._inflight[segment]
                    if segment in self._settled:
                        self._settled[segment].set()
            today = self._seen_keys()[0]
            await self.stage.index_put(self.key(tenant, batch_type, today), {event_id: segment})
        return segment

    async def seen(self, tenant: str, batch_type: str, event_id: str) -> bool:
        found = await asyncio.gather(
            *(self.stage.index_get(self.key(tenant, batch_type, name), [event_id]) for name in self._seen_keys())
        )
        return any(values[0] is not None for values in found)

    async def _open_segment(self, tenant: str, batch_type: str) -> str:
        group = (tenant, batch_type)
        if group in self._open:
            return self._open[group]
        async with self._registry_lock(group):
            if group not in self._open:
                registry = await self.registry(tenant, batch_type)
                reopened = [segment for segment, state in registry.items() if state == OPEN]
                segment = max(reopened) if reopened else self._new_segment()
                if not reopened:  # registered before any event rests in it, so a restart finds it
                    await self.stage.index_put(await self._registry_key(tenant, batch_type), {segment: OPEN})
                self._open[group] = segment
        return self._open[group]

    def _new_segment(self) -> str:
        # Time-ordered, so sorting segments sorts their events by arrival; unique within this receiver.
        self._last_sequence = max(self._last_sequence + 1, time.time_ns() // 1000)
        return f"{self.receiver}-{self._last_sequence:020d}"

    def _registry_lock(self, group: Group) -> asyncio.Lock:
        return self._registry_locks.setdefault(group, asyncio.Lock())

    # --- the registry of segments ----------------------------------------------------------------------------

    async def _registry_key(self, tenant: str, batch_type: str) -> StageKey:
        head = await self.stage.index_get(self.key(tenant, batch_type, f"head-{self.receiver}"), ["registry"])
        return self.key(tenant, batch_type, f"registry-{self.receiver}-{head[0] or 'a'}")

    async def registry(self, tenant: str, batch_type: str) -> dict[str, str]:
        """This receiver's segments and their states."""
        found: dict[str, str] = {}
        async for chunk in self.stage.index_scan(await self._registry_key(tenant, batch_type)):
            found.update(chunk)
        return found

    async def seal(self, tenant: str, batch_type: str) -> list[str]:
        """Close the open segment (if it holds events) and return every segment awaiting a micro-batch, oldest
        first. New events go to a new segment from now on; the call returns once appends to the old one ended."""
        group = (tenant, batch_type)
        async with self._registry_lock(group):
            registry = await self.registry(tenant, batch_type)
            opened = [segment for segment, state in registry.items() if state == OPEN]
            closing = [s for s in opened if await self.stage.count(self.events_key(tenant, batch_type, s))]
            if self._open.get(group) in closing:
                del self._open[group]  # the next accept opens a new segment
            for segment in closing:
                await self._settle(segment)
            if closing:
                await self.stage.index_put(await self._registry_key(tenant, batch_type), dict.fromkeys(closing, SEALED))
                registry.update(dict.fromkeys(closing, SEALED))
        return sorted(segment for segment, state in registry.items() if state == SEALED)

    async def _settle(self, segment: str) -> None:
        while self._inflight.get(segment):
            settled = self._settled.setdefault(segment, asyncio.Event())
            await settled.wait()
        self._settled.pop(segment, None)

    async def done(self, tenant: str, batch_type: str, segments: list[str]) -> None:
        """The segments' micro-batch completed: forget them and their events."""
        group = (tenant, batch_type)
        async with self._registry_lock(group):
            key = await self._registry_key(tenant, batch_type)
            await self.stage.index_put(key, dict.fromkeys(segments, DONE))
            for segment in segments:
                await self.stage.drop_batch(tenant, f"{home(batch_type)}-{segment}")
            registry = await self.registry(tenant, batch_type)
            if sum(state == DONE for state in registry.values()) >= _COMPACT_AFTER:
                await self._compact(tenant, batch_type, registry)

    async def _compact(self, tenant: str, batch_type: str, registry: dict[str, str]) -> None:
        """Rewrite the registry without its done segments: into the other key, then switch the head to it, so a
        receiver killed half way still finds one whole registry."""
        head = self.key(tenant, batch_type, f"head-{self.receiver}")
        current = (await self.stage.index_get(head, ["registry"]))[0] or "a"
        other = "b" if current == "a" else "a"
        fresh = self.key(tenant, batch_type, f"registry-{self.receiver}-{other}")
        await self.stage.index_drop(fresh)
        await self.stage.index_put(fresh, {s: state for s, state in registry.items() if state != DONE})
        await self.stage.index_put(head, {"registry": other})
        await self.stage.index_drop(self.key(tenant, batch_type, f"registry-{self.receiver}-{current}"))

    async def waiting(self, tenant: str, batch_type: str) -> int:
        """Events stored and not yet given to a completed micro-batch (open and sealed segments)."""
        registry = await self.registry(tenant, batch_type)
        counts = [
            await self.stage.count(self.events_key(tenant, batch_type, segment))
            for segment, state in registry.items()
            if state != DONE
        ]
        return sum(counts)

    # --- what a micro-batch reads ------------------------------------------------------------------------------

    async def read(self, tenant: str, batch_type: str, segment: str) -> AsyncIterator[list[dict[str, Any]]]:
        """The segment's events in arrival order; nothing for a segment already dropped. A segment the stage
        cannot read whole, and no completed micro-batch dropped, raises: its events were answered 202."""
        started = False
        try:
            async for chunk in self.stage.read(self.events_key(tenant, batch_type, segment)):
                started = True
                yield chunk
        except StageUnavailable:
            raise
        except StageError:
            if started or not await self.dropped(tenant, batch_type, segment):
                raise  # events lost (expired, or the stage's count disagrees with what it holds): never skipped

    async def dropped(self, tenant: str, batch_type: str, segment: str) -> bool:
        """Its micro-batch completed: the registry says done (what is left of it may be going), or no longer names
        it (rewritten without done segments) and the stage holds none of its events."""
        state = (await self.registry(tenant, batch_type)).get(segment)
        if state is not None:
            return state == DONE
        return not await self.stage.count(self.events_key(tenant, batch_type, segment))
