"""Model zoo, partitioning, data, hooks and launcher validation (single process, fast)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch

from merak_integration import launch
from merak_integration.data import batches
from merak_integration.devicehooks import GPUInstructionHooks, LocalPerseus
from merak_integration.hooks import (
    HookChain,
    InstructionOrderError,
    OrderCheck,
    Recorder,
    instruction_name,
    parse_instruction_name,
)
from merak_integration.models import MODELS, build_layers, get_config, layer_kinds, loss_fn, parameter_counts
from merak_integration.partition import partition
from perseus.errors import InputError
from perseus.plan import PlannedInstruction, PowerStateSchedule


def _params(name: str) -> int:
    return sum(parameter_counts(build_layers(get_config(name), device="meta")))


@pytest.mark.parametrize(
    ("name", "layers", "hidden", "heads"),
    [
        ("gpt3-small", 12, 768, 12),
        ("gpt3-medium", 24, 1024, 16),
        ("gpt3-large", 24, 1536, 16),
        ("gpt3-xl", 24, 2048, 16),
        ("gpt3-2.7b", 32, 2560, 32),
        ("gpt3-6.7b", 32, 4096, 32),
        ("gpt3-13b", 40, 5120, 40),
        ("gpt3-175b", 96, 12288, 96),
        ("bert-base-uncased", 12, 768, 12),
        ("bert-large-uncased", 24, 1024, 16),
    ],
)
def test_transformer_configs_have_published_sizes(name: str, layers: int, hidden: int, heads: int) -> None:
    cfg = get_config(name)
    assert (cfg.num_layers, cfg.hidden, cfg.heads) == (layers, hidden, heads)  # type: ignore[union-attr]


def test_parameter_counts_match_published_models() -> None:
    # torchvision's wide ResNets, exactly.
    assert _params("wide-resnet50_2") == 68_883_240
    assert _params("wide-resnet101_2") == 126_886_696
    # GPT-3 175B (the LM head is untied here: it lives on another stage than the embedding).
    cfg = get_config("gpt3-175b")
    head = cfg.hidden * cfg.vocab_size  # type: ignore[union-attr]
    assert abs((_params("gpt3-175b") - head) / 175e9 - 1) < 0.01
    # GPT-3 small without the untied head is GPT-2 small's 124.4M.
    small = get_config("gpt3-small")
    assert abs(_params("gpt3-small") - small.hidden * small.vocab_size - 124.4e6) < 0.1e6  # type: ignore[union-attr]
    assert set(MODELS) >= {"wide-resnet50_4", "wide-resnet50_8", "wide-resnet101_4", "wide-resnet101_8"}


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="unknown model 'gpt5'"):
        get_config("gpt5")


@pytest.mark.parametrize("name", ["gpt3-tiny", "bert-tiny", "wide-resnet-tiny"])
def test_tiny_models_train_step(name: str) -> None:
    cfg = get_config(name)
    model = torch.nn.Sequential(*build_layers(cfg))
    x, y = next(batches(cfg, 2))
    loss = loss_fn(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())


def test_layers_are_seeded_individually() -> None:
    cfg = get_config("gpt3-tiny")
    whole = build_layers(cfg, seed=3)
    part = build_layers(cfg, seed=3, only=range(4, 6))
    for a, b in zip(whole[4:6], part, strict=True):
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.equal(pa, pb)
    other = build_layers(cfg, seed=4, only=[4])[0]
    assert not torch.equal(next(other.parameters()), next(whole[4].parameters()))


def test_partition_methods() -> None:
    layers = build_layers(get_config("gpt3-tiny"), device="meta")
    counts, kinds = parameter_counts(layers), layer_kinds(layers)
    assert partition("uniform", counts, kinds, 3).boundaries == (0, 4, 7, 10)
    ut = partition("uniform_transformer", counts, kinds, 2)
    assert ut.boundaries == (0, 5, 10)  # embedding + 4 blocks | 4 blocks + head
    custom = partition("custom:0,2,9,10", counts, kinds, 3)
    assert custom.boundaries == (0, 2, 9, 10)
    assert custom.parameters == (sum(counts[:2]), sum(counts[2:9]), counts[9])
    assert "stage 1: layers 2-8" in custom.table(kinds)


def test_parameter_partition_is_optimal() -> None:
    weights = [5, 1, 1, 9, 2, 2, 2, 7, 1, 3]
    kinds = ["block"] * len(weights)
    got = partition("parameters", weights, kinds, 3)
    best = min(
        max(sum(weights[a:b]) for a, b in itertools.pairwise((0, *cut, len(weights))))
        for cut in itertools.combinations(range(1, len(weights)), 2)
    )
    assert max(got.parameters) == best


@pytest.mark.parametrize(
    ("method", "stages", "message"),
    [
        ("custom:0,3,10", 3, "needs 4 boundaries"),
        ("custom:0,5,5,10", 3, "increase strictly"),
        ("custom:1,5,10", 2, "start at 0 and end at 10"),
        ("custom:0,x,10", 2, "must be integers"),
        ("balanced", 2, "must be one of"),
        ("uniform", 11, "only 10 layers"),
    ],
)
def test_partition_errors(method: str, stages: int, message: str) -> None:
    layers = build_layers(get_config("gpt3-tiny"), device="meta")
    with pytest.raises(InputError, match=message):
        partition(method, parameter_counts(layers), layer_kinds(layers), stages)


def test_data_is_deterministic_and_reads_files(tmp_path: Path) -> None:
    cfg = get_config("gpt3-tiny")
    a, b = next(batches(cfg, 4, seed=1)), next(batches(cfg, 4, seed=1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[0][:, 1:], a[1][:, :-1])
    text = tmp_path / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog " * 20)
    x, _ = next(batches(cfg, 2, data_path=str(text)))
    assert x.shape == (2, cfg.seq_len) and int(x.max()) < 128  # ASCII bytes
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / "img" / label).mkdir(parents=True)
        Image.new("RGB", (40, 40), (200, 10, 10) if label == "cat" else (10, 10, 200)).save(tmp_path / "img" / label / "a.png")
    images, labels = next(batches(get_config("wide-resnet-tiny"), 6, data_path=str(tmp_path / "img")))
    assert images.shape == (6, 3, 32, 32) and set(labels.tolist()) <= {0, 1}
    with pytest.raises(InputError, match="no images"):
        next(batches(get_config("wide-resnet-tiny"), 2, data_path=str(tmp_path)))


def test_instruction_names_round_trip() -> None:
    assert instruction_name("forward", 3) == "forward:3" == PlannedInstruction("forward", 3, 1000).name
    assert instruction_name("backward", 5, 1) == "backward:5@1" == PlannedInstruction("backward", 5, 1000, 1).name
    assert parse_instruction_name("backward:5@1") == ("backward", 5, 1)


def test_order_check_and_chain() -> None:
    calls: list[str] = []

    class Log:
        def __init__(self, tag: str) -> None:
            self.tag = tag

        def on_step_begin(self) -> None:
            calls.append(f"{self.tag}.step")

        def on_step_end(self) -> None:
            calls.append(f"{self.tag}.end")

        def on_instruction_begin(self, name: str) -> None:
            calls.append(f"{self.tag}.begin {name}")

        def on_instruction_end(self, name: str) -> None:
            calls.append(f"{self.tag}.end {name}")

    chain = HookChain([Log("a"), Log("b")])
    chain.on_instruction_begin("forward:0")
    chain.on_instruction_end("forward:0")
    assert calls == ["a.begin forward:0", "b.begin forward:0", "b.end forward:0", "a.end forward:0"]

    check = OrderCheck(["forward:0", "backward:0"], stage=1)
    check.on_step_begin()
    check.on_instruction_begin("forward:0")
    with pytest.raises(InstructionOrderError, match="instruction #1 is 'forward:1', the schedule expects 'backward:0'"):
        check.on_instruction_begin("forward:1")
    check.on_step_begin()
    check.on_instruction_begin("forward:0")
    with pytest.raises(InstructionOrderError, match="after 1 of 2"):
        check.on_step_end()

    rec = Recorder()
    rec.on_step_begin()
    rec.on_instruction_begin("forward:0")
    rec.on_instruction_end("forward:0")
    rec.on_step_end()
    assert rec.names() == ["forward:0"] and rec.steps[0].time >= 0


class _FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


class _QueuedController:
    """Applies each request only when the test says so: clock changes that take time, made explicit."""

    def __init__(self, gpu: Any) -> None:
        self.gpu = gpu
        self.requests: list[tuple[int, str]] = []
        self.queue: list[int] = []
        self.log: list[str] = []

    def set_frequency(self, mhz: int) -> None:
        self.requests.append((mhz, self.log[-1] if self.log else ""))
        self.queue.append(mhz)

    def apply_all(self) -> None:
        for mhz in self.queue:
            self.gpu.lock_frequency(mhz)
        self.queue.clear()


def _sim_on_a_fake_clock() -> tuple[Any, PowerStateSchedule]:
    """A simulated stage-1 GPU whose time only moves when it waits, and a plan of four clocks."""
    from perseus.device import sim_gpus

    clock = _FakeClock()
    (gpu,) = sim_gpus(stage=1, time_scale=0.2)
    gpu._clock, gpu._sleep, gpu._origin = clock, clock.sleep, 0.0
    return gpu, _plan(gpu.supported_frequencies())


def _plan(freqs: list[int]) -> PowerStateSchedule:
    return PowerStateSchedule(
        1,
        (
            PlannedInstruction("forward", 0, freqs[0]),
            PlannedInstruction("forward", 1, freqs[10]),
            PlannedInstruction("backward", 0, freqs[20]),
            PlannedInstruction("backward", 1, freqs[-1]),
        ),
    )


def _run_step(local: LocalPerseus, gpu: Any, plan: PowerStateSchedule, between: Any) -> None:
    hooks = HookChain([local, GPUInstructionHooks(gpu, 1)])
    hooks.on_step_begin()
    between("step begin")
    for p in plan.instructions:
        hooks.on_instruction_begin(p.name)
        hooks.on_instruction_end(p.name)
        between(f"end {p.name}")
    hooks.on_step_end()


def test_local_perseus_requests_the_next_clock_when_the_previous_instruction_ends() -> None:
    gpu, plan = _sim_on_a_fake_clock()
    controller = _QueuedController(gpu)
    local = LocalPerseus(gpu, controller, schedule=plan)

    def between(event: str) -> None:  # the gap between instructions: long enough for a change
        controller.log.append(event)
        controller.apply_all()

    _run_step(local, gpu, plan, between)
    # Each clock is asked for before its instruction begins: the first at step begin, every other one
    # when the previous instruction ends (the begin hook repeats it; the controller coalesces that).
    f = plan.frequencies()
    names = [p.name for p in plan.instructions]
    expected = [(f[0], ""), (f[0], "step begin")]
    for i in range(1, 4):
        before = "step begin" if i == 1 else f"end {names[i - 2]}"
        expected += [(f[i], before), (f[i], f"end {names[i - 1]}")]
    assert controller.requests == expected
    it = local.iterations[0]
    assert [m.applied for m in it.instructions] == plan.frequencies()
    assert [m.began_at for m in it.instructions] == plan.frequencies()
    assert local.fraction_at_planned_clock() == 1.0
    for m, p in zip(it.instructions, plan.instructions, strict=True):  # the GPU's (fake-clock) energy
        assert m.energy == pytest.approx(gpu.profile[(1, p.instruction)].at(p.frequency).energy * 0.2, rel=1e-9)


def test_clocks_applied_late_are_reported_as_they_ran() -> None:
    gpu, plan = _sim_on_a_fake_clock()
    controller = _QueuedController(gpu)
    local = LocalPerseus(gpu, controller, schedule=plan)
    pending: list[int] = []

    def between(event: str) -> None:  # every change lands one instruction late
        controller.log.append(event)
        for mhz in pending:
            gpu.lock_frequency(mhz)
        pending[:] = controller.queue
        controller.queue.clear()

    _run_step(local, gpu, plan, between)
    it = local.iterations[0]
    planned = plan.frequencies()
    # Read back, not assumed: instruction i ran at the clock planned for instruction i-1.
    assert [m.applied for m in it.instructions] == [1410, *planned[:-1]]
    assert [m.frequency for m in it.instructions] == planned
    assert local.fraction_at_planned_clock() == 0.25  # only forward:0, planned at the default 1410 MHz
    assert local.summary()["fraction_at_planned_clock"] == 0.25
    # What a server report carries: 4 planned, 1 at its clock, and the read-back clocks' mean.
    planned_count, held, clock = it.clock_counts()
    assert (planned_count, held) == (4, 1)
    assert min(planned[:-1]) < clock < 1410  # read back, weighted by time: neither the planned nor the default


def test_measure_only_local_perseus_never_requests_a_clock() -> None:
    gpu, plan = _sim_on_a_fake_clock()
    local = LocalPerseus(gpu, None, schedule=plan)
    _run_step(local, gpu, plan, lambda event: None)
    assert [m.applied for m in local.iterations[0].instructions] == [1410] * 4
    assert local.fraction_at_planned_clock() == 0.25  # only forward:0 is planned at 1410


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["gpt3-tiny", "2", "4", "--pp", "2", "--tp", "2"], "--tp: tensor parallelism is not supported"),
        (["gpt5", "2", "4"], "MODEL: unknown model 'gpt5'"),
        (["gpt3-tiny", "2", "4", "--pp", "2", "--partition_method", "custom:0,3"], "needs 3 boundaries"),
        (["gpt3-tiny", "2", "3", "--pp", "2", "--train_schedule", "interleaved"], "multiple of the number of stages"),
        (["gpt3-tiny", "2", "1", "--pp", "2"], "1F1B needs at least as many microbatches"),
        (["gpt3-tiny", "2", "4", "--train_schedule", "zb2"], "--train_schedule: must be one of"),
        (["gpt3-tiny", "2", "4", "--server", "localhost"], "--server: expected HOST:PORT"),
        (["gpt3-tiny", "2", "4", "--pp", "4", "--nnodes", "2"], "--master_addr: a run over several nodes needs"),
        (["gpt3-tiny", "2", "4", "--pp", "4", "--nnodes", "3", "--master_addr", "h"], "--nproc_per_node: 3 node(s)"),
        (["gpt3-tiny", "2", "4", "--pp", "4", "--nnodes", "2", "--node_rank", "2", "--master_addr", "h"],
         "--node_rank: must be below --nnodes 2"),
        (["gpt3-tiny", "2", "4", "--device", "nvml"], "--device nvml: NVML is unusable: NVML library libnvidia-ml.so.1"),
    ],
)
def test_launcher_rejects_bad_runs_at_once(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert launch.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("perseus: error: ") and message in err and "\n" not in err


def test_launcher_builds_torchrun_command(tmp_path: Path) -> None:
    args = launch.build_parser().parse_args(["gpt3-tiny", "2", "4", "--pp", "2", "--dp", "2", "--train_schedule", "gpipe"])
    cfg = launch.config_from_args(args)
    assert (cfg.world_size, cfg.schedule, cfg.num_chunks) == (4, "gpipe", 1)
    cmd = launch.torchrun_command(cfg)
    assert "--standalone" in cmd and "--nproc_per_node=4" in cmd and cmd[-2:] == ["-m", "merak_integration.trainer"]
    args = launch.build_parser().parse_args(["gpt3-tiny", "2", "4", "--pp", "4", "--nnodes", "2", "--node_rank", "1",
                                             "--master_addr", "10.0.0.1", "--master_port", "29600"])
    cmd = launch.torchrun_command(launch.config_from_args(args))
    assert "--standalone" not in cmd
    assert {"--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1", "--master_port=29600", "--nproc_per_node=2"} <= set(cmd)
    assert "partition (uniform)" in launch.check_pipeline(cfg)


class _StageStub:
    """What torch's single-stage schedules read of a stage at construction."""

    def __init__(self, index: int, num_stages: int) -> None:
        self.stage_index, self.num_stages = index, num_stages
        self.is_first, self.is_last = index == 0, index == num_stages - 1


@pytest.mark.parametrize("schedule", ["1f1b", "gpipe"])
def test_torch_single_stage_schedules_run_perseus_order(schedule: str) -> None:
    """Dry-run torch's own step code: it executes exactly stage_orders(...) for many shapes."""
    from torch.distributed.pipelining import Schedule1F1B, ScheduleGPipe

    from merak_integration.pipeline import _dry_run
    from perseus.pipeline.schedules import stage_orders

    cls = Schedule1F1B if schedule == "1f1b" else ScheduleGPipe
    for s, m in itertools.product(range(1, 6), range(1, 10)):
        if schedule == "1f1b" and m < s:
            continue
        want = stage_orders(schedule, s, m)
        for stage in range(s):
            got = _dry_run(cls(_StageStub(stage, s), m))  # type: ignore[arg-type]
            assert got == [(i.kind, i.microbatch) for i in want[stage]], (s, m, stage)


def test_torch_interleaved_schedule_runs_perseus_order() -> None:
    """torch's ScheduleInterleaved1F1B runs stage_orders('interleaved-1f1b') when M % S == 0."""
    from torch.distributed.pipelining import ScheduleInterleaved1F1B

    from merak_integration.pipeline import _runtime_order
    from perseus.pipeline.schedules import stage_orders

    for s, c, rounds in itertools.product(range(2, 5), range(2, 4), range(1, 3)):
        m = s * rounds
        want = stage_orders("interleaved-1f1b", s, m, c)
        for rank in range(s):
            stubs = []
            for chunk in range(c):
                stub = _StageStub(chunk * s + rank, s * c)
                stub.group_rank, stub.group_size = rank, s  # type: ignore[attr-defined]
                stubs.append(stub)
            sched = ScheduleInterleaved1F1B(stubs, m)  # type: ignore[arg-type]
            got = _runtime_order(sched, rank, s)
            assert got == [(i.kind, i.microbatch, i.chunk) for i in want[rank]], (s, c, m, rank)
