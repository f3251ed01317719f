"""Zero-bubble schedules end to end on simulated GPUs and gloo: profile B and W, plan, train with the plan."""

from __future__ import annotations

import json
from pathlib import Path

from workers_helpers import ROOT, iterations, launch

from merak_integration.pipeline import PipelineSpec, model_partition
from perseus.cli.main import main
from perseus.pipeline.instruction import virtual_stage
from perseus.plan import FrequencyPlan
from perseus.profile import load_profile

A100 = ROOT / "profiles" / "gpt3-175b+a100_sxm_bf16" / "profile.csv"


def test_zbv_profiles_split_backwards_per_chunk_then_trains_with_its_plan(tmp_path: Path) -> None:
    # Long modelled instructions, so the real CPU work of a tiny chunk stays a small part of what is
    # measured. A simulated instruction never ends early but overruns when the CPU work does (tens of
    # ms on a loaded machine), hence one-sided bounds; the exact shares are checked with a fake clock
    # in tests/device/test_device_sim_chunks.py. Without shares every value would be 1.7-2.5x too big.
    scale = 2.0
    sim = ("--device", "sim", "--sim_time_scale", str(scale), "--train_schedule", "zbv", "--pp", "2")
    run = launch(
        "gpt3-tiny", "2", "4", *sim, "--profile", "true", "--profile_frequencies", "1410,1005",
        "--num_warmup_steps", "1", "--num_prof_steps", "2", "--profile_dir", str(tmp_path),
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    folder = tmp_path / "gpt3-tiny+uniform+pp2+mbs2+zbv"
    measured = load_profile(folder / "profile.csv")
    device = load_profile(A100)
    # Four virtual stages in model order: GPU 0 holds 0 and 3, GPU 1 holds 1 and 2 (a V).
    assert measured.num_stages == 4 and measured.has_split_backward()
    _, part, _ = model_partition(PipelineSpec("gpt3-tiny", 2, 4, 2, "zbv", 2))
    for gpu in range(2):
        chunks = [virtual_stage("zbv", 2, gpu, c) for c in range(2)]
        layers = {v: len(part.layers(v)) for v in chunks}
        for v in chunks:
            share = layers[v] / sum(layers.values()) * scale
            fused = device[(gpu, "backward")].at(1005)
            forward = device[(gpu, "forward")].at(1005)
            for kind, want in (("forward", forward), ("backward_input", fused), ("backward_weight", fused)):
                part_of = share * (0.5 if kind != "forward" else 1.0)  # the simulated split is half and half
                got = measured[(v, kind)].at(1005)
                assert want.energy * part_of * 0.99 <= got.energy <= want.energy * part_of * 1.35, (v, kind)
                assert want.time * part_of * 0.99 <= got.time <= want.time * part_of * 1.35, (v, kind)
    assert json.loads((folder / "meta.json").read_text())["num_stages"] == 4

    out = tmp_path / "frontier"
    assert main(["optimize", str(folder / "profile.csv"), "--stages", "2", "--microbatches", "4",
                 "--schedule", "zbv", "--out", str(out), "--plan-files"]) == 0
    plans = sorted((out / "plans").glob("*.json"))
    slow = FrequencyPlan.load(plans[-1])  # least energy: weight gradients at the lower clock
    assert any(p.frequency == 1005 for p in slow.stages[0] if p.instruction == "backward_weight")
    train_dir = tmp_path / "train"
    run = launch("gpt3-tiny", "2", "4", *sim, "--plan", str(plans[-1]), "--max_steps", "3",
                 "--out_dir", str(train_dir))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert len(iterations(train_dir)) == 3
    rank0 = json.loads((train_dir / "rank0.json").read_text())
    applied = {(name, freq, clock) for name, freq, clock, _, _ in rank0["iterations"][-1]["instructions"]}
    for p in slow.stages[0]:
        assert (p.name, p.frequency, p.frequency) in applied, p.name
