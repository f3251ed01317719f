"""Model zoo: the models of the Merak-Zeus examples, as flat lists of pipeline-cuttable layers.

Every model is a sequence of layers that each take and return one tensor, so any contiguous
slice is a valid pipeline stage. Sizes follow the published configurations (GPT-3 as in the
Merak-Zeus examples, which build them on ``GPT2Config``; BERT as released by Google; wide ResNets
as in torchvision). Weights are random: nothing is downloaded. The ``*-tiny`` variants train on a
CPU in milliseconds per microbatch and are what tests and the demo use.

Build huge models on the meta device (``build_layers(cfg, device="meta")``) to count parameters
without allocating memory.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

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


# ---------------------------------------------------------------------------------------------
# Transformer layers


class TokenEmbedding(nn.Module):
    """Token + position embeddings (+ token type and LayerNorm for BERT)."""

    kind = "embedding"

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.positions = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.bert = cfg.family == "bert"
        if self.bert:
            self.token_type = nn.Embedding(2, cfg.hidden)
            self.norm = nn.LayerNorm(cfg.hidden)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tokens(tokens) + self.positions(pos)[None]
        if self.bert:
            x = self.norm(x + self.token_type.weight[0])
        return x


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(b, t, h))


class TransformerBlock(nn.Module):
    """One transformer layer: pre-LayerNorm (GPT) or post-LayerNorm (BERT)."""

    kind = "block"

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.pre_norm = cfg.family == "gpt"
        self.attn = SelfAttention(cfg.hidden, cfg.heads, causal=self.pre_norm)
        self.norm1 = nn.LayerNorm(cfg.hidden)
        self.norm2 = nn.LayerNorm(cfg.hidden)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.hidden, 4 * cfg.hidden), nn.GELU(), nn.Linear(4 * cfg.hidden, cfg.hidden)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class LanguageModelHead(nn.Module):
    """Final LayerNorm and vocabulary projection (GPT) or the BERT masked-LM head."""

    kind = "head"

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        if cfg.family == "gpt":
            self.transform: nn.Module = nn.LayerNorm(cfg.hidden)
        else:
            self.transform = nn.Sequential(nn.Linear(cfg.hidden, cfg.hidden), nn.GELU(), nn.LayerNorm(cfg.hidden))
        # Untied from the input embedding: the two live on different pipeline stages.
        self.decoder = nn.Linear(cfg.hidden, cfg.vocab_size, bias=cfg.family == "bert")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))


# ---------------------------------------------------------------------------------------------
# Wide ResNet layers


class ResNetStem(nn.Module):
    kind = "stem"

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        c = cfg.base_channels
        self.conv = nn.Conv2d(3, c, 7, stride=2, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.bn(self.conv(x))))


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (expansion 4, stride on the 3x3 conv)."""

    kind = "block"

    def __init__(self, in_ch: int, planes: int, width: int, stride: int) -> None:
        super().__init__()
        out_ch = planes * 4
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.down: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.down = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ClassifierHead(nn.Module):
    kind = "head"

    def __init__(self, in_ch: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------------------------------------


def layer_factories(cfg: ModelConfig) -> list[Callable[[], nn.Module]]:
    """One constructor per layer, in model order (cheap: nothing is built yet)."""
    if isinstance(cfg, TransformerConfig):
        return [
            lambda: TokenEmbedding(cfg),
            *[(lambda: TransformerBlock(cfg)) for _ in range(cfg.num_layers)],
            lambda: LanguageModelHead(cfg),
        ]
    factories: list[Callable[[], nn.Module]] = [lambda: ResNetStem(cfg)]
    in_ch = cfg.base_channels
    for i, count in enumerate(cfg.blocks):
        planes = cfg.base_channels * 2**i
        width = int(planes * (cfg.width_per_group / 64.0))
        for j in range(count):
            stride = 2 if (i > 0 and j == 0) else 1
            factories.append(functools.partial(Bottleneck, in_ch, planes, width, stride))
            in_ch = planes * 4
    factories.append(functools.partial(ClassifierHead, in_ch, cfg.num_classes))
    return factories


def build_layers(
    cfg: ModelConfig,
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
    only: Iterable[int] | None = None,
) -> list[nn.Module]:
    """The model's layers (all, or the indices in ``only``), randomly initialised.

    Layer ``i`` is initialised from seed ``seed * 100003 + i`` whatever else is built, so a
    pipeline rank that builds only its stage's layers gets exactly the weights of a
    single-process model built with the same seed (what the gradient equality check relies on).
    Pass ``device="meta"`` to build without allocating memory (parameter counting).
    """
    factories = layer_factories(cfg)
    indices = range(len(factories)) if only is None else only
    layers: list[nn.Module] = []
    with torch.device(device or "cpu"):
        for i in indices:
            if str(device) != "meta":
                torch.manual_seed(seed * 100003 + i)
            layers.append(factories[i]())
    return layers


def num_layers(cfg: ModelConfig) -> int:
    return len(layer_factories(cfg))


def layer_kinds(layers: list[nn.Module]) -> list[str]:
    """``embedding``, ``block`` or ``head`` for every layer (what uniform_transformer balances)."""
    return [str(getattr(layer, "kind", "block")) for layer in layers]


def parameter_counts(layers: list[nn.Module]) -> list[int]:
    return [sum(p.numel() for p in layer.parameters()) for layer in layers]


def loss_fn(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross entropy for both language models (per token) and image classifiers."""
    if output.dim() == 3:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))
    return F.cross_entropy(output, target)


def describe(cfg: ModelConfig) -> str:
    """One line with the model's size, e.g. for the launcher's banner."""
    if isinstance(cfg, TransformerConfig):
        return f"{cfg.name}: {cfg.family}, {cfg.num_layers} layers, hidden {cfg.hidden}, {cfg.heads} heads"
    depth = 2 + 3 * sum(cfg.blocks)
    return f"{cfg.name}: wide ResNet-{depth}, bottleneck width per group {cfg.width_per_group}"
