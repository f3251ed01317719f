"""A process killed by SIGTERM in the middle of profiling gives the GPU its power limit back."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {here!r})
    from pl_replay import LogGPU, ReplayLog, make_monitor
    from perseus.power_limit import Energy, GlobalPowerLimitOptimizer

    class FileGPU(LogGPU):
        def _apply_power_limit(self, watts):
            super()._apply_power_limit(watts)
            with open({record!r}, "a") as f:
                f.write(f"{{watts}}\\n")

    log = ReplayLog.read("A40_resnet18_gpu0.csv")
    monitor = make_monitor(log)
    monitor.gpus = [FileGPU(0, (100.0, 300.0))]
    plo = GlobalPowerLimitOptimizer(monitor, Energy(), warmup_steps=1, profile_steps=2, pl_step=25)
    plo.on_epoch_begin()
    for _ in range(5):  # 300 W done, 275 W being profiled
        plo.on_step_begin()
        plo.on_step_end()
    print("profiling", plo.current_power_limit, flush=True)
    time.sleep(60)
    """
)


def test_sigterm_mid_profile_restores_default_limit(tmp_path: Path) -> None:
    record = tmp_path / "limits.txt"
    script = CHILD.format(here=str(Path(__file__).parent), record=str(record))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "profiling 275.0"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == -signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
    assert record.read_text().split() == ["300.0", "275.0", "None"]  # None: the default limit
