"""The model zoo's configurations and per-layer parameter counts, without torch.

What the launcher needs to check a run and print its partition (names, sizes, every layer's kind
and parameter count) before any worker starts: importing torch costs seconds of CPU, which the
workers pay anyway but the launcher, ``--help`` and a mistyped flag should not.
:mod:`merak_integration.models` builds the layers these numbers describe (a test checks that
the counts equal the built layers' on every model).
"""

from __future__ import annotations

from dataclasses import dataclass

from perseus.errors import InputError


@dataclass(frozen=True)
class TransformerConfig:
    """A GPT (causal, pre-LayerNorm) or BERT (bidirectional, post-LayerNorm) transformer."""

    name: str
    family: str
    """``gpt`` or ``bert``."""
    num_layers: int
    hidden: int
    heads: int
    vocab_size: int
    max_positions: int
    seq_len: int
    """Sequence length used for training (synthetic data and profiling)."""


@dataclass(frozen=True)
class ResNetConfig:
    """A wide ResNet with bottleneck blocks (torchvision's ``wide_resnet*``)."""

    name: str
    blocks: tuple[int, int, int, int]
    width_per_group: int
    num_classes: int
    image_size: int
    base_channels: int = 64
    family: str = "resnet"


ModelConfig = TransformerConfig | ResNetConfig


def _gpt(name: str, layers: int, hidden: int, heads: int) -> TransformerConfig:
    # GPT2Config.from_pretrained("gpt2") defaults: vocabulary 50257, 1024 positions.
    return TransformerConfig(name, "gpt", layers, hidden, heads, 50257, 1024, 1024)


def _bert(name: str, layers: int, hidden: int, heads: int) -> TransformerConfig:
    return TransformerConfig(name, "bert", layers, hidden, heads, 30522, 512, 512)


def _wrn(name: str, blocks: tuple[int, int, int, int], widen: int) -> ResNetConfig:
    return ResNetConfig(name, blocks, 64 * widen, 1000, 224)


MODELS: dict[str, ModelConfig] = {
    c.name: c
    for c in (
        _gpt("gpt3-small", 12, 768, 12),
        _gpt("gpt3-medium", 24, 1024, 16),
        _gpt("gpt3-large", 24, 1536, 16),
        _gpt("gpt3-xl", 24, 2048, 16),
        _gpt("gpt3-2.7b", 32, 2560, 32),
        _gpt("gpt3-6.7b", 32, 4096, 32),
        _gpt("gpt3-13b", 40, 5120, 40),
        _gpt("gpt3-175b", 96, 12288, 96),
        _bert("bert-base-uncased", 12, 768, 12),
        _bert("bert-large-uncased", 24, 1024, 16),
        _wrn("wide-resnet50_2", (3, 4, 6, 3), 2),
        _wrn("wide-resnet50_4", (3, 4, 6, 3), 4),
        _wrn("wide-resnet50_8", (3, 4, 6, 3), 8),
        _wrn("wide-resnet101_2", (3, 4, 23, 3), 2),
        _wrn("wide-resnet101_4", (3, 4, 23, 3), 4),
        _wrn("wide-resnet101_8", (3, 4, 23, 3), 8),
        # Small variants that train on a CPU in seconds.
        TransformerConfig("gpt3-tiny", "gpt", 8, 64, 4, 512, 64, 32),
        TransformerConfig("bert-tiny", "bert", 8, 64, 4, 512, 64, 32),
        ResNetConfig("wide-resnet-tiny", (2, 2, 2, 2), 16, 10, 32, base_channels=8),
    )
}


def get_config(name: str) -> ModelConfig:
    """The configuration of a model by name; an unknown name raises InputError listing the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise InputError("MODEL", f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def layer_specs(cfg: ModelConfig) -> list[tuple[str, int]]:
    """``(kind, parameter count)`` of every layer, in model order, as :func:`models.build_layers` builds them.

    Kinds are ``embedding``, ``block`` or ``head`` (``stem`` for a ResNet's first layer): what
    the partitioner balances. Counts are those of ``torch.nn`` Linear/Embedding/LayerNorm/Conv2d/
    BatchNorm2d (weights and biases; BatchNorm's running statistics are buffers, not parameters).
    """
    if isinstance(cfg, TransformerConfig):
        h, v = cfg.hidden, cfg.vocab_size
        bert = cfg.family == "bert"
        embedding = v * h + cfg.max_positions * h + (2 * h + 2 * h if bert else 0)  # + token types, LayerNorm
        # qkv (3h^2 + 3h), projection (h^2 + h), two LayerNorms (4h), MLP h -> 4h -> h (8h^2 + 5h)
        block = 12 * h * h + 13 * h
        head = (h * h + h + 2 * h + h * v + v) if bert else (2 * h + h * v)  # transform + decoder (BERT: biased)
        return [("embedding", embedding), *[("block", block)] * cfg.num_layers, ("head", head)]
    c = cfg.base_channels
    specs = [("stem", 3 * c * 7 * 7 + 2 * c)]  # 7x7 convolution without bias, BatchNorm
    in_ch = c
    for i, count in enumerate(cfg.blocks):
        planes = c * 2**i
        width = int(planes * (cfg.width_per_group / 64.0))
        out_ch = planes * 4
        for j in range(count):
            stride = 2 if (i > 0 and j == 0) else 1
            params = in_ch * width + 2 * width + width * width * 9 + 2 * width + width * out_ch + 2 * out_ch
            if stride != 1 or in_ch != out_ch:
                params += in_ch * out_ch + 2 * out_ch  # the downsampling 1x1 convolution and its BatchNorm
            specs.append(("block", params))
            in_ch = out_ch
    specs.append(("head", in_ch * cfg.num_classes + cfg.num_classes))
    return specs


def describe(cfg: ModelConfig) -> str:
    """One line with the model's size, e.g. for the launcher's banner."""
    if isinstance(cfg, TransformerConfig):
        return f"{cfg.name}: {cfg.family}, {cfg.num_layers} layers, hidden {cfg.hidden}, {cfg.heads} heads"
    depth = 2 + 3 * sum(cfg.blocks)
    return f"{cfg.name}: wide ResNet-{depth}, bottleneck width per group {cfg.width_per_group}"
