"""Pages of ``GetFrontier``: a frontier's plans split into responses that each fit under a byte cap.

A *page* is a run of consecutive plans of the frontier (fastest first), optionally restricted to
named plans; its response never exceeds the server's page cap (``--max-page-bytes``, at most
``--max-message-bytes``). A page ends before the first plan that would take the response past
the cap, so at 16 x 256 (about 0.5 MB of JSON per plan) a 4 MiB page holds 7 plans and a
3,000-plan frontier comes in about 430 requests instead of one 1.5 GB message that gRPC refuses.
Only the page's plans are decoded (one more, the plan that did not fit, is decoded and dropped).

A *page token* names where the next page starts and which frontier it belongs to:
``OFFSET.FINGERPRINT``, the fingerprint a hash of the ids, names and times of the plans being
paged. A token from another job, another plan-name filter or a frontier computed again
(re-profiled) no longer matches, so a client never stitches two frontiers together unawares.

Unpaged requests (no page size, no token: the request as it was before paging) get the whole
frontier in one response, or RESOURCE_EXHAUSTED saying how to page, never a silently cut list.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass

from perseus.errors import InputError
from perseus.server.limits import LimitExceeded, flag
from perseus.server.types import MAX_TEXT, NotFound, NotReady, StoredPlan
from perseus.v1 import scheduler_pb2 as pb

MAX_PAGE_SIZE = 100_000
"""Largest ``page_size`` (and number of ``plan_names``): 30x the largest frontier seen (16 x 256: 3,243 plans)."""
MAX_TOKEN_CHARS = 64
"""A token is ``OFFSET.FINGERPRINT``: at most 6 digits, a dot and 16 hex digits; anything longer is not ours."""
_TOKEN = re.compile(r"(\d{1,6})\.([0-9a-f]{16})")
_PLANS_FIELD = pb.GetFrontierResponse.DESCRIPTOR.fields_by_name["plans"].number


@dataclass(frozen=True)
class PageRequest:
    """A checked GetFrontier request: what to page and from where."""

    job_id: str
    include_plans: bool
    paged: bool
    """Whether the client pages (a page size or a token); else the whole frontier in one response."""
    page_size: int
    """Most plans on this page; 0: as many as fit."""
    token: tuple[int, str] | None
    """(offset, fingerprint) of the page token, if any."""
    names: tuple[str, ...]


def parse_request(request: pb.GetFrontierRequest) -> PageRequest:
    """Check the paging fields of ``request``; bad ones raise :class:`InputError` naming the field."""
    if request.page_size > MAX_PAGE_SIZE:
        raise InputError("page_size", f"must be at most {MAX_PAGE_SIZE}, got {request.page_size}")
    token = None
    if request.page_token:
        match = _TOKEN.fullmatch(request.page_token) if len(request.page_token) <= MAX_TOKEN_CHARS else None
        if match is None:
            raise InputError("page_token", "not a page token of this server (pass the previous response's "
                             f"next_page_token, or none for the first page), got {request.page_token[:80]!r}")
        token = (int(match.group(1)), match.group(2))
    if len(request.plan_names) > MAX_PAGE_SIZE:
        raise InputError("plan_names", f"at most {MAX_PAGE_SIZE} names, got {len(request.plan_names)}")
    for name in request.plan_names:
        if not name or len(name) > MAX_TEXT:
            raise InputError("plan_names", f"each name must have 1 to {MAX_TEXT} characters, got {name[:80]!r}")
    return PageRequest(request.job_id, request.include_plans, bool(request.page_size or token), request.page_size,
                       token, tuple(request.plan_names))


def select(job_id: str, plans: Sequence[StoredPlan], names: Sequence[str]) -> list[StoredPlan]:
    """The plans named ``names`` in frontier order (every plan if none is named)."""
    if not names:
        return list(plans)
    wanted = set(names)
    chosen = [p for p in plans if p.name in wanted]
    if len(chosen) < len(wanted):
        missing = sorted(wanted - {p.name for p in chosen})
        raise NotFound(f"plan_names: job {job_id!r} has no frontier plan {missing[0]!r}"
                       + (f" (nor {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return chosen


def fingerprint(job_id: str, plans: Sequence[StoredPlan]) -> str:
    """16 hex digits that change when the paged plans do (ids alone may be reused after a re-profile)."""
    digest = hashlib.blake2b(job_id.encode(), digest_size=8)
    for p in plans:
        digest.update(f"{p.id},{p.name},{p.iteration_time!r};".encode())
    return digest.hexdigest()


def start_of(request: PageRequest, plans: Sequence[StoredPlan], print_: str) -> int:
    """Index of the page's first plan among ``plans`` (whose fingerprint is ``print_``)."""
    if request.token is None:
        return 0
    offset, token_print = request.token
    if token_print != print_:
        raise NotReady(f"page_token: the frontier of job {request.job_id!r} (or the plan_names asked for) "
                       "changed since this token was issued; fetch it again from the first page")
    if not 0 < offset < len(plans):
        raise InputError("page_token", f"points at plan {offset} of {len(plans)}: not a token of this frontier")
    return offset


def build_page(
    request: PageRequest,
    phase: pb.JobPhase,
    frontier: Sequence[StoredPlan],
    selected: str,
    plan_jsons: Callable[[Sequence[StoredPlan]], Iterator[str]],
    page_bytes: int,
    message_bytes: int,
) -> pb.GetFrontierResponse:
    """The response to ``request``: the next plans that fit under the cap, and the token for the rest.

    ``plan_jsons(plans)`` yields the JSON of each of ``plans`` lazily (only with ``include_plans``);
    ``page_bytes`` caps a paged response, ``message_bytes`` an unpaged one.
    """
    plans = select(request.job_id, frontier, request.names)
    print_ = fingerprint(request.job_id, plans)
    start = start_of(request, plans, print_)
    end = min(len(plans), start + request.page_size) if request.page_size else len(plans)
    cap = page_bytes if request.paged else message_bytes
    response = pb.GetFrontierResponse(job_id=request.job_id, phase=phase, selected=selected, total_plans=len(plans),
                                      first_index=start, next_page_token="9" * 6 + "." + "f" * 16)
    size = response.ByteSize()  # with the longest token: room for it whatever this page's is
    response.next_page_token = ""
    chunk = plans[start:end]
    texts = plan_jsons(chunk) if request.include_plans else None
    try:
        for stored in chunk:
            text = next(texts) if texts is not None else ""
            summary = pb.PlanSummary(plan_id=stored.id, name=stored.name, iteration_time=stored.iteration_time,
                                     energy=stored.energy, plan_json=text)
            item = _field_bytes(summary.ByteSize())
            if size + item > cap:
                if not request.paged:
                    raise LimitExceeded(
                        f"the frontier of job {request.job_id!r} ({len(plans)} plans) is over {cap} bytes in one "
                        f"response ({flag('max_message_bytes')}); page it: set page_size and follow next_page_token")
                if not response.plans:
                    raise LimitExceeded(
                        f"plan {stored.name!r} of job {request.job_id!r} needs a {size + item}-byte response, over the "
                        f"{cap}-byte page cap ({flag('max_page_bytes')}, at most {flag('max_message_bytes')}); "
                        "raise it on the server")
                break
            response.plans.append(summary)
            size += item
    finally:
        if isinstance(texts, Generator):
            texts.close()  # the plans after the page are never decoded
    following = start + len(response.plans)
    if following < len(plans):
        response.next_page_token = f"{following}.{print_}"
    return response


def _field_bytes(length: int) -> int:
    """Bytes of one element of the repeated ``plans`` field on the wire: tag, length varint, payload."""
    tag = (_PLANS_FIELD << 3).bit_length()
    return (tag + 6) // 7 + max(1, (length.bit_length() + 6) // 7) + length
