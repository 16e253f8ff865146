"""Slowly changing dimensions: natural keys, change hashes, what the destination holds per key, and the
plan of writes that brings one key in step with its staged record (type 0, 1 or 2), or with its absence.

Plans are pure: the writer carries them out, a dry run only counts them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefect_restful_etl.tasks.engine.http.paths import get_path
from prefect_restful_etl.tasks.engine.load.history import History

Outcome = Literal["inserted", "updated", "unchanged", "expired", "deleted"]
WriteOp = Literal["create", "update", "expire", "soft_delete", "delete"]


def natural_key(record: dict[str, Any], fields: Iterable[str]) -> str:
    """The record's natural key as text: `42`, or `42|EUR` for a key of several fields."""
    return "|".join("" if (v := get_path(record, f)) is None else str(v) for f in fields)


class SoftDelete(BaseModel):
    """A soft delete marks the destination record: `{"field": "status", "value": "deleted", "restore": "active"}`.

    A key that comes back is written again with `restore` in `field` unless its staged record sets the field.
    ```
    PATCH /customers/AC-000007  {"status": "deleted"}
    ```
    """

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        json_schema_extra={"examples": [{"field": "status", "value": "deleted", "restore": "active"}]},
    )

    field: str = Field(min_length=1, description="The destination field that marks a row deleted.")
    value: Any = Field(default=True, description="What `field` is set to when the key goes missing.")
    restore: Any = Field(default=None, description="What `field` is set to when the key comes back.")


class Missing(BaseModel):
    """What a full refresh does with destination keys the extract no longer holds (never an incremental batch).

    `"ignore"`, `"expire"` (type 2: close the current version), `{"action": "soft_delete", "field": ...}`
    (types 0 and 1) or `"delete"` (types 0 and 1). `max_fraction` refuses a refresh that would remove more
    than that share of the destination's live keys: an empty or broken extract must not wipe the dimension.
    A full refresh that no longer reads key 7 sends, by action:
    ```
    expire:       PATCH /customers/AC-000007  {"valid_to": "2026-03-01T00:00:00.000000Z", "is_current": false}
    soft_delete:  PATCH /customers/AC-000007  {"status": "deleted"}
    delete:       DELETE /customers/AC-000007
    ```
    """

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        json_schema_extra={
            "examples": [
                "expire",
                {"action": "soft_delete", "soft_delete": {"field": "status", "value": "deleted"}, "max_fraction": 0.2},
            ]
        },
    )

    action: Literal["ignore", "expire", "soft_delete", "delete"] = Field(
        default="ignore", description="What happens to a key the full refresh did not read; or give the action alone."
    )
    soft_delete: SoftDelete | None = Field(default=None, description="The marking, when the action is soft_delete.")
    max_fraction: float = Field(
        default=0.5, gt=0, le=1, description="The most of the live keys a refresh may remove; past it, it removes none."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"action": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _soft_delete_needs_a_field(self) -> Missing:
        if (self.action == "soft_delete") != (self.soft_delete is not None):
            raise ValueError('soft_delete: give {"field": ...} exactly when action is "soft_delete"')
        return self


@dataclass(frozen=True, slots=True)
class Version:
    """One destination row of a key: its id, the hash of its compared fields and (type 2) where it starts."""

    id: Any
    hash: str
    number: int = 0
    valid_from: str | None = None
    deleted: bool = False  # soft-deleted (types 0 and 1)


@dataclass(slots=True)
class KeyState:
    """What the destination holds for one natural key: its live rows, the highest version number seen and
    (type 2) where its last closed version ends.

    A key has one live row, except after a type 2 run that failed between its two writes (then two), or where
    the destination holds the key twice (`extras`).
    """

    live: list[Version] = field(default_factory=list)
    top: int = 0
    ended: str | None = None  # the latest valid_to of a closed version: no new version may begin before it
    closed: list[tuple[int, str | None]] = field(default_factory=list)  # (number, valid_from) of closed versions

    def add(self, version: Version, live: bool, valid_to: str | None = None) -> None:
        self.top = max(self.top, version.number)
        if live:
            self.live.append(version)
            return
        self.closed.append((version.number, version.valid_from))
        if valid_to is not None:
            self.ended = valid_to if self.ended is None else later(self.ended, valid_to)

    def newest(self) -> Version | None:
        """The live row with the highest version and start; of rows alike in both (duplicates), the one with the
        lowest id, so that every run picks the same whatever order the API answers in."""
        if len(self.live) < 2:
            return self.live[0] if self.live else None
        top = max((v.number, _moment(v.valid_from)) for v in self.live)
        return min((v for v in self.live if (v.number, _moment(v.valid_from)) == top), key=lambda v: str(v.id))

    @property
    def present(self) -> bool:
        """Whether the destination holds the key: a live row, the newest not soft-deleted."""
        newest = self.newest()
        return newest is not None and not newest.deleted

    def stale(self) -> list[Version]:
        """Live rows other than the newest: left behind by an interrupted type 2 write."""
        newest = self.newest()
        return [v for v in self.live if v is not newest]

    def extras(self) -> list[Version]:
        """Live rows that repeat another live row's version (its number and start): duplicates in the destination
        (types 0 and 1: every live row but one). The newest is kept; an interrupted type 2 write leaves a
        version that begins elsewhere, which is stale, not an extra."""
        if len(self.live) < 2:
            return []
        newest = self.newest()
        assert newest is not None
        seen = {(number, _moment(start)) for number, start in self.closed} | {
            (newest.number, _moment(newest.valid_from))
        }
        extras = []
        for version in sorted((v for v in self.live if v is not newest), key=lambda v: str(v.id)):
            mark = (version.number, _moment(version.valid_from))
            if mark in seen:
                extras.append(version)
            seen.add(mark)
        return extras

    def without(self, versions: list[Version]) -> KeyState:
        """This state with `versions` no longer live (removed, or left aside as duplicates)."""
        gone = {id(v) for v in versions}
        return KeyState([v for v in self.live if id(v) not in gone], self.top, self.ended, self.closed)


@dataclass(frozen=True, slots=True)
class Write:
    """One request: create (POST a body), update (PUT/PATCH a body), expire / soft_delete (PATCH), delete."""

    op: WriteOp
    body: dict[str, Any] | None = None
    target: Any = None


@dataclass(frozen=True, slots=True)
class Change:
    """The plan for one key: its outcome, the writes in order, and its live row once they land.

    `after.id` is None when the change creates the row: the create's response supplies it.
    """

    outcome: Outcome
    key: str
    writes: tuple[Write, ...] = ()
    after: Version | None = None

    @property
    def expires(self) -> int:
        return sum(w.op == "expire" for w in self.writes)


@dataclass(frozen=True)
class Planner:
    """Plans changes for one load: its SCD type, history fields, soft delete and effective time `at`."""

    scd_type: Literal[0, 1, 2]
    at: str
    history: History | None = None
    soft_delete: SoftDelete | None = None

    def plan(self, key: str, record: dict[str, Any], new_hash: str, state: KeyState | None) -> Change:
        if self.scd_type == 2:
            return self._type2(key, record, new_hash, state)
        newest = state.newest() if state else None
        if newest is None:
            return Change("inserted", key, (Write("create", self._restored(record)),), Version(None, new_hash))
        if self.scd_type == 0 or (newest.hash == new_hash and not newest.deleted):
            return Change("unchanged", key, (), newest)
        body = self._restored(record)
        return Change("updated", key, (Write("update", body, newest.id),), Version(newest.id, new_hash))

    def _type2(self, key: str, record: dict[str, Any], new_hash: str, state: KeyState | None) -> Change:
        """Insert the new version first, then expire the old: a run cut between the two leaves two current
        versions, which the next run mends (the older ends where the newer begins); the reverse order would
        leave none, and the rerun could not tell that from a key that went missing."""
        history = self._history()
        state = state or KeyState()
        newest = state.newest()
        mend_at = (newest.valid_from if newest else None) or self.at
        mends = tuple(Write("expire", history.closed(mend_at), v.id) for v in state.stale())
        if newest is not None and newest.hash == new_hash:
            return Change("unchanged", key, mends, newest)
        # Never before the current version began (clock skew), nor before a closed one ended (a late batch
        # re-inserting a key that a later batch expired): validity intervals never overlap.
        start = later(later(self.at, newest.valid_from if newest else None), state.ended)
        number = state.top + 1
        create = Write("create", {**record, **history.opened(start, number)})
        after = Version(None, new_hash, number, start)
        if newest is None:
            return Change("inserted", key, (create,), after)
        return Change("updated", key, (create, *mends, Write("expire", history.closed(start), newest.id)), after)

    def plan_missing(self, key: str, state: KeyState, missing: Missing) -> Change:
        """A live destination key that a full refresh no longer holds."""
        newest = state.newest()
        if newest is None or missing.action == "ignore":
            return Change("unchanged", key, (), newest)
        if missing.action == "expire":
            # The newest ends at `at` (never before it began); older current ones, left by an interrupted run,
            # end where the newest begins, as the type 2 change path mends them: no two intervals overlap.
            end, mend_at = later(self.at, newest.valid_from), newest.valid_from or self.at
            ends = [end if v is newest else mend_at for v in state.live]
            writes = tuple(
                Write("expire", self._history().closed(e), v.id) for v, e in zip(state.live, ends, strict=True)
            )
            return Change("expired", key, writes, None)
        if missing.action == "delete":
            return Change("deleted", key, tuple(Write("delete", None, v.id) for v in state.live), None)
        assert missing.soft_delete is not None
        if newest.deleted:
            return Change("unchanged", key, (), newest)
        body = {missing.soft_delete.field: missing.soft_delete.value}
        return Change("deleted", key, (Write("soft_delete", body, newest.id),), None)

    def _history(self) -> History:
        assert self.history is not None, "a type 2 planner needs its history fields"
        return self.history

    def _restored(self, record: dict[str, Any]) -> dict[str, Any]:
        soft = self.soft_delete
        if soft is None or soft.field in record:
            return record
        return {**record, soft.field: soft.restore}


def later(at: str, start: str | None) -> str:
    """`at`, or `start` when that is later: a new version never begins before the one it ends (clock skew)."""
    if start is None:
        return at
    return start if _moment(start) > _moment(at) else at


def format_moment(moment: datetime) -> str:
    """The one form of validity and audit times: UTC, microseconds, `Z`, so text order is time order."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _moment(value: str | None) -> datetime:
    """A validity time for ordering; an absent or unreadable one sorts first."""
    if value is None:
        return datetime.min.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return datetime.min.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
