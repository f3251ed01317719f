"""Collectives on the wrong device fail here as they would under NCCL (``PERSEUS_EMULATE_NCCL``)."""

from __future__ import annotations

from pathlib import Path

from workers_helpers import launch

from merak_integration.collectives import CUDA_BACKEND, backend_devices, emulated_backend

RUN = ("gpt3-tiny", "2", "4", "--pp", "2", "--device", "sim", "--sim_time_scale", "0.05", "--max_steps", "2")


def test_backend_strings_name_the_devices_they_serve() -> None:
    assert backend_devices("nccl") == {"cuda"}
    assert backend_devices(CUDA_BACKEND) == {"cpu", "cuda"}
    assert backend_devices("gloo") == {"cpu", "cuda"}
    assert emulated_backend({}) is None
    assert emulated_backend({"PERSEUS_EMULATE_NCCL": "1"}) == CUDA_BACKEND
    assert emulated_backend({"PERSEUS_EMULATE_NCCL": "nccl"}) == "nccl"


def test_an_nccl_only_group_fails_on_host_tensors(tmp_path: Path) -> None:
    # What the workers did before: init_process_group("nccl") and all-reduce CPU tensors in it.
    run = launch(*RUN, "--out_dir", str(tmp_path), extra_env={"PERSEUS_EMULATE_NCCL": "nccl"})
    assert run.returncode != 0
    assert "No backend type associated with device type cpu" in run.stderr


def test_the_workers_group_serves_host_and_cuda_tensors(tmp_path: Path) -> None:
    run = launch(*RUN, "--dp", "2", "--out_dir", str(tmp_path), extra_env={"PERSEUS_EMULATE_NCCL": "1"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert (tmp_path / "iterations.json").is_file()
