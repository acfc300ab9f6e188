"""Trained sample models shipped with the workbench: weights, metadata, and how to rebuild them.

Each sample lives in ``sample_models/<name>/`` as ``weights.pt`` (a float32
``state_dict`` that loads with ``torch.load(..., weights_only=True)``) and
``meta.json`` (architecture, preprocessing, measured test and validation accuracy,
training settings (trained without the validation images: ``Task.fitting()``),
library versions, sha256 of the weights, and the command that reproduces it).
``python -m sample_models.train --model NAME`` retrains one.

This package is the lowest layer: it never imports ``workbench``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from sample_models.architectures import build_architecture

__all__ = ["SAMPLE_DIR", "build_module", "read_meta", "sample_names"]

SAMPLE_DIR: Path = Path(__file__).resolve().parent

META_FILE = "meta.json"
WEIGHTS_FILE = "weights.pt"


def sample_names() -> list[str]:
    """The names of the shipped samples (folders holding a meta.json), sorted."""
    return sorted(p.parent.name for p in SAMPLE_DIR.glob(f"*/{META_FILE}"))


def _sample_dir(name: str) -> Path:
    names = sample_names()
    if name not in names:
        raise KeyError(f"unknown sample model {name!r}; known samples: {', '.join(names)}")
    return SAMPLE_DIR / name


def read_meta(name: str) -> dict:
    """The parsed meta.json of sample ``name``.

    Raises:
        KeyError: no sample is called ``name``; the message lists the known ones.
    """
    return json.loads((_sample_dir(name) / META_FILE).read_text(encoding="utf-8"))


def build_module(name: str, *, load_weights: bool = True) -> nn.Module:
    """The sample's torch module in eval mode, with its trained weights unless told not to.

    The weights are loaded with ``weights_only=True`` (no arbitrary unpickling) and
    strictly (every tensor must match the architecture).

    Raises:
        KeyError: no sample is called ``name``; the message lists the known ones.
    """
    meta = read_meta(name)
    module = build_architecture(meta["arch"], **meta.get("arch_kwargs", {}))
    if load_weights:
        state = torch.load(_sample_dir(name) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        module.load_state_dict(state, strict=True)
    return module.eval()
