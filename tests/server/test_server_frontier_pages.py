"""GetFrontier in pages: a frontier whose plans exceed one page comes back whole, page by page, each
response under the server's cap; bad page requests fail with one clear line."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from server_helpers import profile_slice

from perseus.client import PerseusClient
from perseus.plan import FrequencyPlan
from perseus.plan.store import decode_plan
from perseus.server import paging
from perseus.server.app import ServerConfig, ServerThread
from perseus.server.limits import Limits
from perseus.server.types import StoredPlan
from perseus.v1 import scheduler_pb2 as pb
from perseus.v1 import scheduler_pb2_grpc as pb_grpc

JOB = "paged"
S, M = 4, 8
PAGE_BYTES = 16 * 1024
"""The smallest page the server allows: a 64-instruction plan is about 4 KB of JSON, so 3 or 4 per page."""
MESSAGE_BYTES = 64 * 1024
"""Below the whole frontier with plans, so an unpaged request cannot get it."""


@pytest.fixture(scope="module")
def paged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, PerseusClient, Path]]:
    """A serving job of 4 x 8 on a server with 16 KiB pages and 64 KiB messages."""
    db = tmp_path_factory.mktemp("pages") / "perseus.db"
    limits = Limits(max_page_bytes=PAGE_BYTES, max_message_bytes=MESSAGE_BYTES, max_profile_bytes=32 * 1024)
    with (ServerThread(ServerConfig(port=0, db=f"sqlite:///{db}", limits=limits)) as srv,
          PerseusClient(f"127.0.0.1:{srv.port}", retry_timeout=5) as client):
        client.register_job(job_id=JOB, model="gpt3-175b", partition="even", schedule="1f1b", num_stages=S,
                            num_microbatches=M, profile=profile_slice(S, freq_step=2))
        client.wait_for_phase(JOB, "serving", timeout=120)
        yield srv, client, db


def _stored(db: Path) -> list[tuple[str, FrequencyPlan]]:
    """(name, plan) of every frontier row of the job, fastest first, straight from the database file."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name, plan_json FROM scheduler_plans WHERE job_id = ? AND kind = 'frontier' "
                            "ORDER BY position", (JOB,)).fetchall()
    plans = [(name, decode_plan(text)) for name, text in rows]
    return sorted(plans, key=lambda p: p[1].iteration_time)


def _call(srv: ServerThread, **fields: object) -> pb.GetFrontierResponse:
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
        return pb_grpc.SchedulerStub(channel).GetFrontier(pb.GetFrontierRequest(job_id=JOB, **fields), timeout=30)


def _error(srv: ServerThread, **fields: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        _call(srv, **fields)
    return err.value.code(), err.value.details()


def test_frontier_over_many_pages_is_fetched_whole_and_equals_the_stored_plans(paged) -> None:
    _, client, db = paged
    stored = _stored(db)
    pages = list(client.frontier_pages(JOB, include_plans=True))
    assert len(pages) >= 4, "the frontier's plans must span several pages for this test to mean anything"
    assert all(0 < page.ByteSize() <= PAGE_BYTES for page in pages)
    assert all(page.next_page_token for page in pages[:-1]) and not pages[-1].next_page_token
    seen: list[tuple[int, int]] = []
    info = client.get_frontier(JOB, include_plans=True, progress=lambda done, total: seen.append((done, total)))
    assert [(p.name, p.plan) for p in info.plans] == stored
    assert seen[-1] == (len(stored), len(stored)) and len(seen) == len(pages)
    assert info.phase == "serving" and info.selected == "p000"
    # Summaries alone fit in one page here; a name filter pages through the named plans only.
    assert [p.name for p in client.get_frontier(JOB).plans] == [name for name, _ in stored]
    names = [stored[-1][0], stored[0][0], stored[len(stored) // 2][0]]
    picked = client.get_frontier(JOB, include_plans=True, names=names)
    assert [(p.name, p.plan) for p in picked.plans] == [stored[0], stored[len(stored) // 2], stored[-1]]


def test_page_size_limits_the_plans_per_page(paged) -> None:
    srv, _, db = paged
    total = len(_stored(db))
    first = _call(srv, page_size=2)
    assert len(first.plans) == 2 and first.total_plans == total and first.first_index == 0
    second = _call(srv, page_size=2, page_token=first.next_page_token)
    assert second.first_index == 2 and [p.name for p in second.plans] == ["p002", "p003"]


def test_unpaged_request_gets_everything_or_one_clear_error(paged) -> None:
    srv, _, db = paged
    whole = _call(srv)  # the request before paging: summaries of every plan fit one message
    assert len(whole.plans) == len(_stored(db)) and not whole.next_page_token
    code, details = _error(srv, include_plans=True)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "page it: set page_size and follow next_page_token" in details and "\n" not in details


@pytest.mark.parametrize(("fields", "code", "says"), [
    ({"page_token": "garbage"}, grpc.StatusCode.INVALID_ARGUMENT, "page_token: not a page token of this server"),
    ({"page_token": "3." + "0" * 16}, grpc.StatusCode.FAILED_PRECONDITION, "changed since this token was issued"),
    ({"page_token": "x" * 10_000}, grpc.StatusCode.INVALID_ARGUMENT, "page_token: not a page token"),
    ({"page_size": paging.MAX_PAGE_SIZE + 1}, grpc.StatusCode.INVALID_ARGUMENT,
     f"page_size: must be at most {paging.MAX_PAGE_SIZE}"),
    ({"plan_names": ["p000", "nope"]}, grpc.StatusCode.NOT_FOUND, "plan_names: job 'paged' has no frontier plan 'nope'"),
    ({"plan_names": [""]}, grpc.StatusCode.INVALID_ARGUMENT, "plan_names: each name must have 1 to"),
])
def test_bad_page_requests_fail_with_one_line(paged, fields: dict[str, object], code: grpc.StatusCode,
                                              says: str) -> None:
    srv, _, _ = paged
    got, details = _error(srv, **fields)
    assert got == code and says in details and "\n" not in details


def test_tokens_do_not_cross_filters_or_point_past_the_end(paged) -> None:
    srv, _, db = paged
    token = _call(srv, include_plans=True, page_size=1).next_page_token
    # The same token with a plan-name filter pages another list: refused, not stitched together.
    code, details = _error(srv, include_plans=True, page_token=token, plan_names=["p000", "p001"])
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "fetch it again from the first page" in details
    fingerprint = token.split(".")[1]
    code, details = _error(srv, page_token=f"{len(_stored(db))}.{fingerprint}")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token: points at plan" in details


def test_frontier_export_writes_every_plan(paged, tmp_path: Path) -> None:
    srv, _, db = paged
    out = tmp_path / "plans"
    done = subprocess.run([sys.executable, "-m", "perseus", "frontier", JOB, "--server", f"127.0.0.1:{srv.port}",
                           "--export", str(out), "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    stored = _stored(db)
    assert f"exported {len(stored)} plans of {JOB} to {out}" in done.stdout
    assert {p.name for p in out.iterdir()} == {f"{name}.json" for name, _ in stored}
    for name, plan in stored:
        assert FrequencyPlan.load(out / f"{name}.json") == plan
    assert json.loads(done.stdout.split("\n", 1)[1])["plans"][0]["name"] == "p000"


def _plans(count: int) -> list[StoredPlan]:
    return [StoredPlan(k + 1, "frontier", f"p{k:03d}", 1.0 + k / 100, 100.0 - k) for k in range(count)]


@pytest.mark.parametrize("cap", [600, 1000, 1500, 2500, 5000])
def test_pages_never_exceed_the_cap_and_cover_every_plan(cap: int) -> None:
    """The byte accounting is exact: each response's serialized size stays under every cap tried."""
    plans = _plans(40)
    texts = {p.id: "x" * (20 + 11 * p.id) for p in plans}  # plans of many sizes, up to 460 bytes

    def jsons(chunk: object) -> Iterator[str]:
        for p in chunk:  # type: ignore[attr-defined]
            yield texts[p.id]

    request = pb.GetFrontierRequest(job_id=JOB, include_plans=True, page_size=paging.MAX_PAGE_SIZE)
    got: list[str] = []
    while True:
        page = paging.build_page(paging.parse_request(request), pb.JOB_PHASE_SERVING, plans, "p000", jsons,
                                 cap, MESSAGE_BYTES)
        assert page.ByteSize() <= cap and page.plans
        got += [p.plan_json for p in page.plans]
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert got == [texts[p.id] for p in plans]


def test_a_plan_larger_than_a_page_names_the_flag_to_raise() -> None:
    plans = _plans(3)
    request = paging.parse_request(pb.GetFrontierRequest(job_id=JOB, include_plans=True, page_size=10))
    with pytest.raises(paging.LimitExceeded, match=r"plan 'p000' of job 'paged' needs a \d+-byte response, over the "
                       r"1000-byte page cap \(--max-page-bytes, at most --max-message-bytes\)"):
        paging.build_page(request, pb.JOB_PHASE_SERVING, plans, "", lambda chunk: iter(["y" * 2000] * 3), 1000,
                          MESSAGE_BYTES)
