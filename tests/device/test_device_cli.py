"""``perseus devices``: lists GPUs, or says there is none and shows the simulated one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from perseus.device import NoNvidiaGPU, nvml_gpus

# The real `perseus` entry point, limited to this command so the test does not depend on others.
MAIN = (
    "import sys, perseus.cli.main as m; m.COMMAND_MODULES = ('perseus.cli.devices',); "
    "sys.exit(m.main(['devices', *sys.argv[1:]]))"
)
REPO = Path(__file__).resolve().parents[2]


def nvidia_present() -> bool:
    try:
        nvml_gpus()
    except NoNvidiaGPU:
        return False
    return True


def perseus(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PERSEUS_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", MAIN, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        cwd=REPO,
    )


def test_help() -> None:
    out = perseus("--help")
    assert out.returncode == 0 and "--sim-profile" in out.stdout and "--reset" in out.stdout


def test_auto_lists_gpus_or_the_simulated_one() -> None:
    out = perseus()
    assert out.returncode == 0, out.stderr
    if nvidia_present():
        assert "MHz" in out.stdout and "Simulated" not in out.stdout
    else:
        assert out.stdout.startswith("No NVIDIA GPU found: ")
        assert "Simulated NVIDIA A100-SXM4-40GB" in out.stdout
        assert "855-1410 MHz (38)" in out.stdout and "100-400 W" in out.stdout


def test_forced_nvml_without_gpu_is_one_line_error() -> None:
    if nvidia_present():
        pytest.skip("an NVIDIA GPU is present")
    out = perseus("--backend", "nvml")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert out.stderr.startswith("perseus: error: no NVIDIA GPU: ")


def test_sim_with_another_profile(tmp_path) -> None:
    out = perseus("--backend", "sim", "--sim-profile", "profiles/gpt3-175b+a40_bf16/profile.csv")
    assert out.returncode == 0, out.stderr
    assert "Simulated NVIDIA A40" in out.stdout and "855-1740 MHz (60)" in out.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("stage,instruction,frequency,time,energy\n0,forward,1410,-1,3\n")
    out = perseus("--backend", "sim", "--sim-profile", str(bad))
    assert out.returncode == 2 and "no meta.json beside the profile; pass --blocking-power" in out.stderr
    out = perseus("--backend", "sim", "--sim-profile", str(bad), "--blocking-power", "80")
    assert out.returncode == 2 and f"{bad}:2: time must be a positive number" in out.stderr
    assert "Traceback" not in out.stderr


def test_reset(fake, capsys) -> None:
    from perseus.cli.devices import _reset
    from perseus.device import nvml_gpus as discover

    (device,) = fake.STATE.devices
    device.locked, device.limit_mw = (900, 900), 150_000  # left behind by a SIGKILLed worker
    assert _reset(discover(fake, can_admin=True, environ={})) == 0
    assert device.locked is None and device.limit_mw == device.default_limit_mw
    assert "clocks unlocked" in capsys.readouterr().out
    out = perseus("--reset", "--backend", "sim")
    assert out.returncode == 0 and "nothing to reset" in out.stdout
    if not nvidia_present():
        out = perseus("--reset")
        assert out.returncode == 2 and out.stderr.startswith("perseus: error: no NVIDIA GPU to reset: NVML library")
