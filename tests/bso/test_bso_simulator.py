"""The trace-driven simulator on the shipped Zeus traces, and ``perseus bso simulate``."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from perseus.bso.search import zeus_cost
from perseus.bso.simulator import SimulationConfig, jit_power_limit, simulate
from perseus.bso.traces import TRACE_DIR, WORKLOADS, load_trace
from perseus.cli import bso as bso_cli
from perseus.errors import InputError, PerseusError

CIFAR = next(w for w in WORKLOADS if w.name == "cifar100-shufflenetv2")
LIBRI = next(w for w in WORKLOADS if w.name == "librispeech-deepspeech2")


def test_trace_files_are_shipped_and_parsed() -> None:
    assert (TRACE_DIR / "README.md").read_text().count("Apache License 2.0") == 1
    trace = load_trace(CIFAR, "v100")
    assert trace.batch_sizes == (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
    assert trace.max_power_limit == 250
    assert sorted(trace.paths[1024]) == [70, 71, 71, 74, 77, 77, 80, 80, 90, 97]
    assert None in trace.paths[4096]  # a run that never reached 60% accuracy
    # WER: lower is better, and every recorded run at batch size 512 missed 40.
    assert load_trace(LIBRI, "v100").paths.get(512) == (None, None, None)


def test_optimizer_beats_default_on_cifar_and_is_deterministic() -> None:
    trace = load_trace(CIFAR, "v100")
    result = simulate(trace, SimulationConfig(seed=3))
    again = simulate(trace, SimulationConfig(seed=3))
    assert result.optimized.energy == again.optimized.energy
    assert result.recurrences == 2 * 10 * 7
    # Default 1024 needs ~80 epochs; 32-128 need ~18: the optimizer must find the small ones.
    assert result.optimized.energy < 0.6 * result.baseline.energy
    bs, pl = result.final_config
    assert bs in (32, 64, 128, 256)
    # The limit is the just-in-time choice for that batch size: least 0.5 J + 0.5 * max power * s per epoch.
    power, max_power = trace.power[bs], float(trace.max_power_limit)
    assert pl == min(power, key=lambda p: 0.5 * power[p].energy_per_epoch + 0.5 * max_power * power[p].time_per_epoch)
    # Every recurrence ends with exactly one converged run in both policies.
    assert sum(r.converged for r in result.optimized.runs) == result.recurrences
    assert sum(r.converged for r in result.baseline.runs) == result.recurrences
    # Early stopping: an unconverged run stops at most one epoch after passing beta x best-so-far
    # (or at max_epochs when nothing has converged yet).
    eta, max_power = 0.5, float(trace.max_power_limit)
    epoch_cost = max(zeus_cost(p.energy_per_epoch, p.time_per_epoch, eta, max_power)
                     for by_pl in trace.power.values() for p in by_pl.values())  # fmt: skip
    best = None
    stopped_early = 0
    for run in result.optimized.runs:
        cost = zeus_cost(run.energy, run.time, eta, max_power)
        if run.converged:
            best = cost if best is None else min(best, cost)
        elif best is None:
            assert run.epochs == result.max_epochs
        else:
            assert 2.0 * best < cost <= 2.0 * best + epoch_cost or run.epochs == result.max_epochs
            stopped_early += cost <= 2.0 * best + epoch_cost
    assert stopped_early >= 1


def test_jit_power_limit_minimises_epoch_cost() -> None:
    power = load_trace(CIFAR, "v100").power[128]
    chosen = jit_power_limit(power, eta=1.0, max_power=250.0)  # energy only
    assert power[chosen].energy_per_epoch == min(p.energy_per_epoch for p in power.values())
    assert jit_power_limit(power, eta=0.0, max_power=250.0) == min(power, key=lambda pl: power[pl].time_per_epoch)


def test_baseline_only_when_beta_huge_and_single_batch_size() -> None:
    trace = load_trace(CIFAR, "v100")
    only_default = dataclasses.replace(trace, paths={1024: trace.paths[1024]})
    result = simulate(only_default, SimulationConfig(recurrences=5))
    assert [r.batch_size for r in result.optimized.runs] == [1024] * 5
    # Same runs sampled; the optimizer differs only by its power limit (and the profiling epoch).
    assert [r.epochs for r in result.optimized.runs] == [r.epochs for r in result.baseline.runs]


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="perseus")
    bso_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bso", "simulate", *argv])
    return int(args.handler(args))


def test_cli_prints_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("--workload", "movielens-ncf", "--gpu", "v100", "--markdown") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("| Workload | GPU | Runs | Baseline MJ | BSO MJ | Energy saved")
    assert "| movielens-ncf | v100 | 182 |" in out
    assert run_cli("--workload", "squad-bert") == 0
    out = capsys.readouterr().out
    assert "Energy saved" in out and "skipped squad-bert on p100" in out


def test_cli_bad_input_is_one_line_error(tmp_path) -> None:
    with pytest.raises(InputError, match="--beta"):
        run_cli("--beta", "0.5")
    with pytest.raises(PerseusError, match=r"summary_train\.csv"):
        run_cli("--trace-dir", str(tmp_path))
    with pytest.raises(InputError, match="no combination"):
        run_cli("--workload", "squad-bert", "--gpu", "p100")
    (tmp_path / "summary_train.csv").write_text("dataset,network,batch_size,optimizer,learning_rate,run,target_metric,target_epoch\n"
                                                "squad,bert_base_uncased,32,adamw,1e-5,1,84.0,oops\n")  # fmt: skip
    with pytest.raises(InputError, match=r"summary_train.csv:2: column 'target_epoch'"):
        run_cli("--trace-dir", str(tmp_path), "--workload", "squad-bert", "--gpu", "v100")
