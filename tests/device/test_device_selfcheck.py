"""The self-check runs end to end on the simulated backend and its checks hold."""

from __future__ import annotations

import pytest

from perseus.device import NoNvidiaGPU, nvml_gpus, safety, selfcheck


def test_selfcheck_on_sim(monkeypatch, capsys) -> None:
    monkeypatch.setenv("PERSEUS_SIM_TIME_SCALE", "0.05")
    assert selfcheck.main(["--backend", "sim", "--seconds", "0.1"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == [1410, 1125, 855]
    assert [int(r[1]) for r in rows] == [1410, 1125, 855]  # observed clock = locked clock
    times = [float(r[2]) for r in rows]
    assert times == sorted(times)  # lower clock, longer time
    assert "FAIL" not in out and "after unlock the GPU reports 1410 MHz" in out
    assert safety.pending() == []


def test_selfcheck_without_nvidia_gpu_is_one_line_error(capsys) -> None:
    try:
        nvml_gpus()
    except NoNvidiaGPU:
        pass
    else:
        pytest.skip("an NVIDIA GPU is present")
    assert selfcheck.main(["--backend", "nvml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perseus: error: no NVIDIA GPU") and err.count("\n") == 1


def test_pick_frequencies() -> None:
    assert selfcheck.pick_frequencies(list(range(1980, 209, -15)), 3) == [1980, 1590, 1185]
    assert selfcheck.pick_frequencies([1410, 1395], 3) == [1410, 1395]
