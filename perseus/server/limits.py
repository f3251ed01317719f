"""What one client may ask of the server: the limits ``perseus serve`` enforces.

Every limit is a ``perseus serve`` flag; the defaults fit a thousand-GPU job with room to spare
while keeping one misbehaving or hostile client from exhausting the server's memory or disk.
A call over a limit fails with RESOURCE_EXHAUSTED (or INVALID_ARGUMENT for an oversized field)
naming the flag that raises it.
"""

from __future__ import annotations

from dataclasses import dataclass

from perseus.errors import InputError, PerseusError

MIB = 1024 * 1024


class LimitExceeded(PerseusError):
    """A request would take the server past one of its :class:`Limits` (RESOURCE_EXHAUSTED)."""


@dataclass(frozen=True)
class Limits:
    """The server's limits; each field is the ``perseus serve`` flag of the same name."""

    max_message_bytes: int = 16 * MIB
    """Largest request or response on the wire; gRPC answers RESOURCE_EXHAUSTED above it."""
    max_page_bytes: int = 4 * MIB
    """Largest GetFrontier page: a frontier of thousands of large plans comes in pages of at most this
    many bytes (and of at most ``max_message_bytes``). 4 MiB is gRPC's default receive limit, so a client
    in any language reads a page without raising its own limit; a 16 x 256 plan is about 0.5 MB."""
    max_jobs: int = 10_000
    """Jobs stored at once (``perseus jobs delete`` frees a slot)."""
    max_ranks_per_job: int = 100_000
    """Ranks registered per job (each is a row and a schedule to serve)."""
    max_profile_bytes: int = 8 * MIB
    """Largest profile CSV a client may register (a 1024-stage profile with 80 clocks is about 9 MB)."""
    max_watch_streams: int = 20_000
    """Open WatchSchedule streams over all clients (one per rank)."""
    max_watch_streams_per_client: int = 2_048
    """Open WatchSchedule streams from one client address (a host runs a few ranks; 2048 covers NAT)."""
    max_report_streams: int = 20_000
    """Open StreamReports streams over all clients (one per rank)."""
    max_report_streams_per_client: int = 2_048
    """Open StreamReports streams from one client address (as for watch streams)."""

    def validate(self) -> None:
        for name, low in (("max_message_bytes", 64 * 1024), ("max_page_bytes", 16 * 1024), ("max_jobs", 1), ("max_ranks_per_job", 1),
                          ("max_profile_bytes", 1024),
                          ("max_watch_streams", 1), ("max_watch_streams_per_client", 1),
                          ("max_report_streams", 1), ("max_report_streams_per_client", 1)):
            value = getattr(self, name)
            if value < low:
                raise InputError(flag(name), f"must be >= {low}, got {value}")
        if self.max_profile_bytes > self.max_message_bytes:
            raise InputError("--max-profile-bytes", f"must be <= --max-message-bytes ({self.max_message_bytes})")
        if self.max_message_bytes > 2**31 - 1:
            raise InputError("--max-message-bytes", "gRPC takes at most 2 GiB - 1")
        if self.max_watch_streams_per_client > self.max_watch_streams:
            raise InputError("--max-watch-streams-per-client", "must be <= --max-watch-streams")
        if self.max_report_streams_per_client > self.max_report_streams:
            raise InputError("--max-report-streams-per-client", "must be <= --max-report-streams")

    @property
    def page_bytes(self) -> int:
        """The byte cap of one GetFrontier page: ``max_page_bytes``, at most ``max_message_bytes``."""
        return min(self.max_page_bytes, self.max_message_bytes)

    def describe(self) -> str:
        """One line for the start-up log."""
        return (f"messages {_size(self.max_message_bytes)}, frontier pages {_size(self.page_bytes)}, profiles {_size(self.max_profile_bytes)}, "
                f"{self.max_jobs} jobs of {self.max_ranks_per_job} ranks, {self.max_watch_streams} watch streams "
                f"({self.max_watch_streams_per_client} per client), {self.max_report_streams} report streams "
                f"({self.max_report_streams_per_client} per client)")


def flag(field_name: str) -> str:
    """The ``perseus serve`` flag of a :class:`Limits` field."""
    return "--" + field_name.replace("_", "-")


def _size(n: int) -> str:
    return f"{n / MIB:g} MiB" if n % MIB == 0 else f"{n} bytes"
