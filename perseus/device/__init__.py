"""GPU device layer: one interface over NVML and simulated GPUs, a non-blocking frequency
controller, an energy monitor, and restoration of every setting Perseus changed.

Never imports torch at module level (real GPUs synchronise through torch only when the
program has already imported it).
"""

from perseus.device.base import GPU
from perseus.device.controller import ControllerStats, FrequencyController
from perseus.device.discovery import BACKENDS, DEFAULT_SIM_PROFILE, get_gpus, sim_gpus
from perseus.device.monitor import EnergyMonitor, Window
from perseus.device.nvml import NVMLGPU, NoNvidiaGPU, nvml_gpus
from perseus.device.safety import restore_all
from perseus.device.sim import SimulatedGPU

__all__ = [
    "BACKENDS",
    "DEFAULT_SIM_PROFILE",
    "GPU",
    "NVMLGPU",
    "ControllerStats",
    "EnergyMonitor",
    "FrequencyController",
    "NoNvidiaGPU",
    "SimulatedGPU",
    "Window",
    "get_gpus",
    "nvml_gpus",
    "restore_all",
    "sim_gpus",
]
