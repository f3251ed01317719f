"""The stall watch names a rank that stopped before its first heartbeat (a real TCPStore, no torchrun).

Such a rank never writes its key; reading every key at once would wait for it forever, so the
watch must read the keys that exist and count the missing rank as silent since it began watching.
"""

from __future__ import annotations

import datetime
import time

import torch.distributed as dist
from workers_helpers import free_port

from merak_integration.stallwatch import SILENT_AFTER, StallWatch


def test_a_rank_that_never_beat_is_named_silent() -> None:
    store = dist.TCPStore("127.0.0.1", free_port(), is_master=True, timeout=datetime.timedelta(seconds=10))
    said: list[str] = []
    watch = StallWatch(dist.PrefixStore("perseus/heartbeat/", store), rank=0, world=2, pp=2, timeout=0.2,
                       say=said.append, interval=0.1)
    try:
        deadline = time.monotonic() + SILENT_AFTER + 10
        while not said and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        watch.stop()
    assert said, f"no stall reported within {SILENT_AFTER + 10} s"
    assert "rank 1 (stage 1, never sent a heartbeat" in said[0], said[0]
