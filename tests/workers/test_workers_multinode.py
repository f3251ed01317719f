"""Two launchers on this machine, as two nodes of one 4-stage pipeline over 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from workers_helpers import ROOT, env, free_port


def test_two_nodes_train_one_pipeline(tmp_path: Path) -> None:
    port = free_port()
    common = ["gpt3-tiny", "2", "8", "--pp", "4", "--device", "sim", "--sim_time_scale", "0.05", "--max_steps", "2",
              "--nnodes", "2", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port),
              "--out_dir", str(tmp_path / "out")]
    nodes = [
        subprocess.Popen([sys.executable, "-m", "merak_integration.launch", *common, "--node_rank", str(rank)],
                         cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    outputs = []
    try:
        for node in nodes:
            outputs.append(node.communicate(timeout=600))
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.communicate()
    for node, (out, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, out[-2000:] + err[-4000:]
    # Ranks 0-1 ran on node 0, ranks 2-3 on node 1: one record per stage, one loss log from rank 0.
    ranks = sorted(json.loads(p.read_text())["stage"] for p in (tmp_path / "out").glob("rank*.json"))
    assert ranks == [0, 1, 2, 3]
    assert len(json.loads((tmp_path / "out" / "iterations.json").read_text())) == 2
    assert "iteration 1:" in outputs[0][0] and "iteration" not in outputs[1][0]


def test_env_vars_configure_the_nodes(monkeypatch) -> None:
    from merak_integration import launch

    monkeypatch.setenv("NNODES", "2")
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "node0.example")
    monkeypatch.setenv("MASTER_PORT", "29611")
    cfg = launch.config_from_args(launch.build_parser().parse_args(["gpt3-tiny", "2", "4", "--pp", "4"]))
    assert (cfg.nnodes, cfg.node_rank, cfg.master_addr, cfg.master_port, cfg.nproc_per_node) == (
        2, 1, "node0.example", 29611, 2)
