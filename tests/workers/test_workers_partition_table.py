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
