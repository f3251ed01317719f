"""Training batches: synthetic by default, a local text file or image folder when given.

Every rank draws the same batches (same seed), so the first stage has the inputs and the last
stage the targets without any extra communication, and a single-process run sees the same data.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from merak_integration.models import ModelConfig, TransformerConfig
from perseus.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")


def batches(
    cfg: ModelConfig, batch_size: int, *, seed: int = 0, data_path: str | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless ``(inputs, targets)`` batches of ``batch_size`` samples for ``cfg``."""
    gen = torch.Generator().manual_seed(seed)
    if isinstance(cfg, TransformerConfig):
        tokens = _text_tokens(Path(data_path), cfg.vocab_size) if data_path else None
        yield from _token_batches(cfg, batch_size, gen, tokens)
    else:
        images = _image_folder(Path(data_path), cfg.image_size) if data_path else None
        yield from _image_batches(cfg.image_size, cfg.num_classes, batch_size, gen, images)


def _token_batches(
    cfg: TransformerConfig, batch_size: int, gen: torch.Generator, corpus: torch.Tensor | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    t = cfg.seq_len
    while True:
        if corpus is None:
            seq = torch.randint(0, cfg.vocab_size, (batch_size, t + 1), generator=gen)
        else:
            starts = torch.randint(0, len(corpus) - t - 1, (batch_size,), generator=gen)
            seq = torch.stack([corpus[s : s + t + 1] for s in starts.tolist()])
        if cfg.family == "gpt":
            yield seq[:, :-1], seq[:, 1:]  # next-token prediction
        else:
            yield seq[:, :-1], seq[:, :-1]  # masked-LM style: reconstruct every token


def _text_tokens(path: Path, vocab_size: int) -> torch.Tensor:
    """Byte-level tokens of a UTF-8 text file (no tokenizer download needed)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(str(path), f"cannot read text data: {exc.strerror}") from None
    if len(raw) < 2:
        raise InputError(str(path), "text data file is empty")
    data = torch.tensor(list(raw), dtype=torch.long) % vocab_size
    return data


def _image_batches(
    size: int, classes: int, batch_size: int, gen: torch.Generator, folder: tuple[torch.Tensor, torch.Tensor] | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        if folder is None:
            yield torch.randn(batch_size, 3, size, size, generator=gen), torch.randint(
                0, classes, (batch_size,), generator=gen
            )
        else:
            images, labels = folder
            idx = torch.randint(0, len(images), (batch_size,), generator=gen)
            yield images[idx], labels[idx] % classes


def _image_folder(path: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images under ``path/<class>/*.png``; one sub-folder per class (ImageFolder layout)."""
    try:
        from PIL import Image
    except ImportError:
        raise InputError(str(path), "reading an image folder needs Pillow (pip install pillow)") from None
    if not path.is_dir():
        raise InputError(str(path), "image data must be a folder with one sub-folder per class")
    classes = sorted(p for p in path.iterdir() if p.is_dir())
    images: list[torch.Tensor] = []
    labels: list[int] = []
    for label, folder in enumerate(classes):
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                img = Image.open(file).convert("RGB").resize((size, size))
            except OSError as exc:
                raise InputError(str(file), f"cannot read image: {exc}") from None
            pixels = torch.from_numpy(np.asarray(img, dtype=np.float32).copy())  # (size, size, 3)
            images.append(pixels.permute(2, 0, 1) / 127.5 - 1.0)
            labels.append(label)
    if not images:
        raise InputError(str(path), f"no images ({', '.join(IMAGE_SUFFIXES)}) found in class sub-folders")
    return torch.stack(images), torch.tensor(labels)
