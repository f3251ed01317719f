"""Model zoo: the models of the Merak-Zeus examples, as flat lists of pipeline-cuttable layers.

Every model is a sequence of layers that each take and return one tensor, so any contiguous
slice is a valid pipeline stage. Sizes follow the published configurations (GPT-3 as in the
Merak-Zeus examples, which build them on ``GPT2Config``; BERT as released by Google; wide ResNets
as in torchvision). Weights are random: nothing is downloaded. The ``*-tiny`` variants train on a
CPU in milliseconds per microbatch and are what tests and the demo use.

Build huge models on the meta device (``build_layers(cfg, device="meta")``) to count parameters
without allocating memory. The configurations and parameter counts live, torch-free, in
:mod:`merak_integration.modelspec` (re-exported here).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F

from merak_integration.modelspec import MODELS as MODELS
from merak_integration.modelspec import ModelConfig as ModelConfig
from merak_integration.modelspec import ResNetConfig as ResNetConfig
from merak_integration.modelspec import TransformerConfig as TransformerConfig
from merak_integration.modelspec import describe as describe
from merak_integration.modelspec import get_config as get_config

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
