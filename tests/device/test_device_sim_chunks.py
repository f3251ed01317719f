"""Simulated GPUs charge a model chunk's instruction its share of the stage, for every schedule."""

from __future__ import annotations

import pytest

from merak_integration.devicehooks import (
    GPUInstructionHooks,
    InstructionMeasurement,
    IterationMeasurement,
    LocalPerseus,
)
from merak_integration.pipeline import PipelineSpec, model_partition, normalize_schedule
from perseus.device import SimulatedGPU
from perseus.device.sim import SIM_BACKWARD_INPUT_SHARE
from perseus.errors import DeviceError
from perseus.pipeline.instruction import virtual_stage
from perseus.profile import PipelineProfile


def test_share_scales_time_and_energy(a100: PipelineProfile, clock) -> None:
    gpu = SimulatedGPU(a100, stage=2, clock=clock, sleep=clock.sleep)
    m = a100[(2, "forward")].at(1410)
    e0, t0 = gpu.energy(), clock()
    gpu.on_instruction_begin(2, "forward", 0.25)
    gpu.on_instruction_end()
    assert clock() - t0 == pytest.approx(0.25 * m.time)
    assert gpu.energy() - e0 == pytest.approx(0.25 * m.energy)
    with pytest.raises(DeviceError, match=r"share must be in \(0, 1\]"):
        gpu.on_instruction_begin(2, "forward", 1.5)


def test_fused_profile_gets_the_documented_split(a100: PipelineProfile, clock) -> None:
    gpu = SimulatedGPU(a100, stage=1, clock=clock, sleep=clock.sleep)
    fused = a100[(1, "backward")].at(1410)
    t0 = clock()
    gpu.on_instruction_begin(1, "backward_input")
    gpu.on_instruction_end()
    assert clock() - t0 == pytest.approx(SIM_BACKWARD_INPUT_SHARE * fused.time)
    t0 = clock()
    gpu.on_instruction_begin(1, "backward_weight")
    gpu.on_instruction_end()
    assert clock() - t0 == pytest.approx((1 - SIM_BACKWARD_INPUT_SHARE) * fused.time)


def _iteration_cost(a100: PipelineProfile, clock, train_schedule: str, rank: int) -> tuple[float, float]:
    """Busy (time, energy) of one rank's instructions of one iteration, as the workers drive the GPU."""
    schedule, chunks = normalize_schedule(train_schedule, None)
    spec = PipelineSpec("gpt3-tiny", 2, 8, 2, schedule, chunks)
    _, part, _ = model_partition(spec)
    sizes = [len(part.layers(virtual_stage(schedule, 2, rank, c))) for c in range(chunks)]
    gpu = SimulatedGPU(a100, stage=rank, clock=clock, sleep=clock.sleep)
    hooks = GPUInstructionHooks(gpu, rank, [n / sum(sizes) for n in sizes])
    e0 = gpu.energy()
    for name in spec.instruction_names(rank):
        hooks.on_instruction_begin(name)
        hooks.on_instruction_end(name)
    return gpu.busy_time, gpu.energy() - e0


@pytest.mark.parametrize("train_schedule", ["interleaved", "zb", "zbv", "dualpipev"])
@pytest.mark.parametrize("rank", [0, 1])
def test_every_schedule_does_one_stage_of_work_per_microbatch(
    a100: PipelineProfile, clock, train_schedule: str, rank: int
) -> None:
    # Before chunk shares, interleaved with 2 chunks replayed the whole stage per chunk: twice 1F1B's work.
    base_time, base_energy = _iteration_cost(a100, clock, "1f1b", rank)
    time, energy = _iteration_cost(a100, clock, train_schedule, rank)
    assert time == pytest.approx(base_time, rel=1e-9)
    assert energy == pytest.approx(base_energy, rel=1e-9)


def test_stage_means_add_up_a_microbatch_over_its_chunks(a100: PipelineProfile, clock) -> None:
    local = LocalPerseus(SimulatedGPU(a100, clock=clock, sleep=clock.sleep), None)
    rows = [("forward:0", 0.3, 3.0), ("forward:0@1", 0.2, 2.0), ("forward:1", 0.5, 5.0), ("forward:1@1", 0.2, 2.0),
            ("backward_input:0", 0.4, 4.0), ("backward_weight:0@1", 0.1, 1.0)]
    local.iterations = [
        IterationMeasurement(9.0, 90.0, [InstructionMeasurement(n, None, None, t, e) for n, t, e in rows])
    ]
    assert local.per_chunk_kind_means() == {
        (0, "forward"): pytest.approx((0.4, 4.0)), (1, "forward"): pytest.approx((0.2, 2.0)),
        (0, "backward_input"): (0.4, 4.0), (1, "backward_weight"): (0.1, 1.0),
    }
    # What the server's sweep receives: one microbatch over the whole stage (chunk 0 + chunk 1).
    assert local.per_kind_means()["forward"] == pytest.approx((0.6, 6.0))
