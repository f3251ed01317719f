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


def test_auto_without_nvidia_gpu_lists_the_simulated_one() -> None:
    # This machine has no NVIDIA driver: the listing must say so and show the simulated GPU.
    assert not nvidia_present()
    out = perseus()
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("No NVIDIA GPU found: NVML library libnvidia-ml.so.1 not found")
    assert "Simulated NVIDIA A100-SXM4-40GB" in out.stdout
    assert "855-1410 MHz (38)" in out.stdout and "100-400 W" in out.stdout


def test_auto_with_a_gpu_lists_it(tmp_path) -> None:
    # The fake NVML in this process's place: the listing shows the GPU, not a simulated one.
    shared = tmp_path / "gpus.json"
    import fake_nvml

    fake_nvml.share_state(shared, [fake_nvml.FakeDevice(name="NVIDIA H100 80GB HBM3", uuid="GPU-h1")])
    fake_nvml.configure()
    out = perseus(env={"PERSEUS_NVML_MODULE": "fake_nvml", "FAKE_NVML_STATE": str(shared),
                       "PYTHONPATH": str(Path(__file__).parent), "PERSEUS_DEVICE_MODE": "measure"})
    assert out.returncode == 0, out.stderr
    assert "NVIDIA H100 80GB HBM3" in out.stdout and "Simulated" not in out.stdout
    assert "210-1410 MHz (81)" in out.stdout


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


def test_reset_all(fake, capsys) -> None:
    from perseus.cli.devices import _reset
    from perseus.device import nvml_gpus as discover

    (device,) = fake.STATE.devices
    device.locked, device.limit_mw = (900, 900), 150_000  # left behind, with no record of it
    assert _reset(discover(fake, can_admin=True, environ={})) == 0
    assert device.locked is None and device.limit_mw == device.default_limit_mw
    assert "clocks unlocked" in capsys.readouterr().out
    out = perseus("--reset", "--backend", "sim")
    assert out.returncode == 0 and "nothing to reset" in out.stdout
    out = perseus("--reset", "--all")
    assert out.returncode == 2 and out.stderr.startswith("perseus: error: no NVIDIA GPU to reset: NVML library")


def test_reset_undoes_the_recorded_changes_of_dead_processes(tmp_path, _state_dir) -> None:
    import fake_nvml

    shared = tmp_path / "gpus.json"
    fake_nvml.share_state(shared, [fake_nvml.FakeDevice(uuid="GPU-aa"), fake_nvml.FakeDevice(uuid="GPU-bb")])
    fake_nvml.configure()
    devices = fake_nvml.shared_devices(shared)
    devices[0].locked, devices[1].locked = (900, 900), (1005, 1005)
    fake_nvml.STATE.shared = shared
    fake_nvml._save(devices)
    fake_nvml.configure()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _state_dir.mkdir(parents=True)
    (_state_dir / "GPU-bb.json").write_text(f'{{"uuid": "GPU-bb", "pid": {dead.stdout.strip()}, "clock": true}}')
    env = {"PERSEUS_NVML_MODULE": "fake_nvml", "FAKE_NVML_STATE": str(shared),
           "PYTHONPATH": str(Path(__file__).parent), "PERSEUS_STATE_DIR": str(_state_dir)}
    out = perseus("--reset", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("restored GPU-bb: locked clock")
    after = fake_nvml.shared_devices(shared)
    assert after[1].locked is None and after[0].locked == (900, 900)  # exactly what was recorded
    out = perseus("--reset", env=env)
    assert out.returncode == 0 and out.stdout.startswith("Nothing to reset")
    out = perseus("--all")
    assert out.returncode == 2 and "--all only goes with --reset" in out.stderr
