"""The partition table a user sees before training: counts in words that read right."""

from __future__ import annotations

from merak_integration.models import build_layers, get_config, layer_kinds, parameter_counts
from merak_integration.partition import partition


def test_one_block_is_singular_and_the_head_is_named() -> None:
    layers = build_layers(get_config("gpt3-tiny"), device="meta")
    counts, kinds = parameter_counts(layers), layer_kinds(layers)
    table = partition("custom:0,8,9,10", counts, kinds, 3).table(kinds)
    assert "stage 1: layer 8 (1 block)," in table
    assert "stage 2: layer 9 (head)," in table


def test_resnet_stem_is_not_called_an_embedding() -> None:
    layers = build_layers(get_config("wide-resnet-tiny"), device="meta")
    counts, kinds = parameter_counts(layers), layer_kinds(layers)
    table = partition("uniform", counts, kinds, 2).table(kinds)
    assert "+ stem" in table and "embedding" not in table


def test_a_run_that_cannot_fit_is_refused_before_anything_loads() -> None:
    import pytest

    from merak_integration import memory
    from merak_integration.launch import build_parser, check_pipeline, config_from_args
    from perseus.errors import InputError

    fits = check_pipeline(config_from_args(build_parser().parse_args(["gpt3-tiny", "2", "8", "--pp", "4", "--device", "sim"])))
    assert fits.splitlines()[-1].startswith("memory: about ")
    with pytest.raises(InputError, match=r"MODEL: will not fit: about [0-9.]+ GiB needed"):
        check_pipeline(config_from_args(build_parser().parse_args(["gpt3-175b", "1", "8", "--pp", "4", "--device", "sim"])))
    # By hand for gpt3-xl (hidden 2048, 16 heads, seq 1024), rank 0 of 4 under 1F1B: 6 blocks x 4 microbatches
    # x 1024 x 2048 x (34 + 5 x 16 x 1024 / 2048) values x 4 bytes.
    from merak_integration.models import get_config
    from merak_integration.pipeline import model_partition

    spec = config_from_args(build_parser().parse_args(["gpt3-xl", "1", "8", "--pp", "4", "--device", "sim"])).pipeline_spec()
    model, part, kinds = model_partition(spec)
    rank0 = memory.estimate(model, part, kinds, "1f1b", 4, 1, 8)[0]
    cfg = get_config("gpt3-xl")
    blocks = sum(1 for i in part.layers(0) if kinds[i] == "block")
    assert rank0.activations == int(blocks * 4 * 1024 * cfg.hidden * (34 + 5 * cfg.heads * 1024 / cfg.hidden) * 4)
    assert rank0.weights_and_grads == 2 * 4 * part.parameters[0]


def test_counted_layers_equal_the_built_layers_of_every_model() -> None:
    """The launcher partitions from counts (no torch): they must be the built layers' kinds and sizes."""
    from merak_integration.models import MODELS
    from merak_integration.modelspec import layer_specs

    for name, cfg in MODELS.items():
        layers = build_layers(cfg, device="meta")
        assert layer_specs(cfg) == list(zip(layer_kinds(layers), parameter_counts(layers), strict=True)), name


def test_the_launcher_checks_a_run_without_importing_torch() -> None:
    """Validating flags and printing the partition must not wait seconds for torch (the workers import it)."""
    import subprocess
    import sys

    from workers_helpers import ROOT, env

    code = ("import sys\nfrom merak_integration.launch import build_parser, check_pipeline, config_from_args\n"
            "print(check_pipeline(config_from_args(build_parser().parse_args(['gpt3-tiny', '2', '4', '--pp', '2', "
            "'--device', 'sim', '--dp', '2', '--sim_slowdown', '1:1.2:3']))))\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "stage 1:" in run.stdout
