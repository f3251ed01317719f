"""Zero-bubble jobs on a real server: split-backward profiles in, plans with all three kinds out."""

from __future__ import annotations

import pickle

import grpc
import pytest
from server_helpers import profile_csv, profile_slice

from perseus.client import PerseusClient, PerseusRpcError, Target
from perseus.errors import InputError
from perseus.profile import split_backward
from perseus.server.core import SchedulerCore
from perseus.server.sweep import next_frequency
from perseus.solver import compute_frontier


@pytest.mark.parametrize(("schedule", "chunks"), [("zb", 1), ("zbv", 2), ("dualpipev", 2)])
def test_split_profile_job_serves_plans_with_weight_gradients(
    client: PerseusClient, schedule: str, chunks: int
) -> None:
    profile = split_backward(profile_slice(2, freq_step=4), 0.5)
    job_id = f"split-{schedule}"
    client.register_job(job_id=job_id, num_stages=2, num_microbatches=4, schedule=schedule, num_chunks=chunks,
                        profile=profile_csv(profile), blocking_power=profile.blocking_power)
    for rank in range(2):
        client.register_rank(job_id, rank, rank, profile.frequencies())
    client.wait_for_phase(job_id, "serving")
    expected = compute_frontier(profile, schedule, 2, 4, chunks)
    served = client.get_schedule(job_id, 1).instructions
    assert served == expected.fastest.stages[1]
    assert {p.instruction for p in served} >= {"forward", "backward_input", "backward_weight"}
    client.set_target(job_id, Target.of_baseline("max-frequency"))
    baseline = client.get_schedule(job_id, 0).instructions
    assert [(p.instruction, p.microbatch, p.chunk) for p in baseline] == [
        (p.instruction, p.microbatch, p.chunk) for p in expected.fastest.stages[0]
    ]


def test_fused_profile_for_a_zero_bubble_job_is_refused_with_the_fix(client: PerseusClient) -> None:
    with pytest.raises(PerseusRpcError) as err:
        client.register_job(job_id="fused-zb", num_stages=2, num_microbatches=4, schedule="zb",
                            profile=profile_csv(profile_slice(2, freq_step=4)), blocking_power=80.0)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "no backward_input measurements" in err.value.details and "--backward-input-share" in err.value.details


def test_input_errors_survive_pickling() -> None:
    # The server computes frontiers in a process pool; its errors must cross back whole.
    error = pickle.loads(pickle.dumps(InputError("profile_csv", "bad", line=3)))
    assert (str(error), error.where, error.problem, error.line) == ("profile_csv:3: bad", "profile_csv", "bad", 3)


def test_sweep_of_split_reports_waits_on_both_parts_and_ends() -> None:
    freqs = [1400, 1300]
    both = {"forward": {0: (0.1, 5.0)}, "backward_input": {0: (0.1, 5.0)}, "backward_weight": {0: (0.1, 5.0)}}
    assert next_frequency(freqs, {1400: both}, 3) == 1300
    no_weight = {k: v for k, v in both.items() if k != "backward_weight"}
    assert next_frequency(freqs, {1400: both, 1300: no_weight}, 3) == 1300
    assert next_frequency(freqs, {1400: both, 1300: both}, 3) is None


def test_report_profile_names_an_unknown_kind() -> None:
    with pytest.raises(InputError, match="backward_input, backward_weight"):
        SchedulerCore.report_profile(None, "job", 0, 1400, [("backward_x", 0.1, 1.0)])  # type: ignore[arg-type]
