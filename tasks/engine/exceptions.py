"""One exception hierarchy, grouped by what the caller should do; no message ever holds a secret."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect_restful_etl.tasks.engine.report import JobReport


class EtlError(Exception):
    """Root of every error restful-etl raises."""


class ConfigError(EtlError):
    """A configuration is wrong: raised before any request is sent, naming the field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class SourceError(EtlError):
    """An API answered with an error that retrying will not mend (a 4xx other than 429)."""

    def __init__(self, endpoint: str, status: int | None, message: str) -> None:
        self.endpoint = endpoint
        self.status = status
        super().__init__(f"{endpoint} answered {status}: {message}" if status else f"{endpoint}: {message}")


class RetriableError(SourceError):
    """429, 5xx, a timeout or a dropped connection: worth another attempt."""

    def __init__(self, endpoint: str, status: int | None, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(endpoint, status, message)


class PaginationError(EtlError):
    """A paginator would loop forever, went past its page limit, or was given a page that contradicts the stream."""


class SourceChanged(PaginationError):
    """The source was written while its pages were read (its announced total changed, a record came twice):
    records may have moved between pages unread. An extract reads the stream again; see `ExtractJob.passes`."""


class DestinationError(SourceError):
    """A write to the destination API failed for one record."""


class DestinationDataError(EtlError):
    """A destination row the load cannot read, such as a type 2 current flag or version number that is neither
    a boolean nor a number: the load stops before it writes, since it cannot tell which version is current."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.detail = field, message
        super().__init__(f"{field}: {message}")


class LoadLimitExceeded(EtlError):
    """A load stopped on purpose: more writes refused than its error threshold allows, or a full refresh
    that would remove more of the destination than `missing.max_fraction` allows."""


class StageError(EtlError):
    """The stage (memory, Redis or MongoDB) cannot be read or written."""


class StageUnavailable(StageError):
    """The stage's server did not answer (refused, dropped, timed out): worth another attempt.

    Names the operation, the stage key and the server's address, never its password.
    """

    def __init__(self, operation: str, key: str, message: str) -> None:
        self.operation = operation
        self.key = key
        super().__init__(f"stage {operation} of {key} failed: {message}")


class ScreenStop(EtlError):
    """A quality screen whose action is `stop` failed: the batch stops before anything is loaded.

    `report` is the stopped transform job's report as it stood (counts and screen summary), so that the
    batch's audit row keeps the quality figures of the records screened before the stop.
    """

    def __init__(self, screen: str, message: str, report: JobReport | None = None) -> None:
        self.screen, self.detail, self.report = screen, message, report
        super().__init__(f"screen {screen!r} stopped the batch: {message}")

    def __reduce__(self) -> tuple[type[ScreenStop], tuple[str, str, JobReport | None]]:
        # Prefect may pickle a failed task's exception: rebuild it from its parts, not from the formatted text
        return type(self), (self.screen, self.detail, self.report)


class RecordError(EtlError):
    """One record is bad (a value that cannot be converted, a failed screen): it goes to the error table."""

    def __init__(self, message: str, *, column: str | None = None, value: object = None) -> None:
        self.column = column
        self.value = value
        super().__init__(message)


def first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception to raise for a task group that failed: the first of its failures, unless one of them is a
    stop (a cancellation, a termination signal: a BaseException that is no Exception). A stop tears down what its
    siblings were doing (a connection cut mid-read is a ReadError there), and the job was stopped, not broken."""
    stops = [ex for ex in group.exceptions if not isinstance(ex, Exception)]
    return (stops or list(group.exceptions))[0]
