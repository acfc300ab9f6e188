"""The sample models shipped in ``sample_models/``: trained weights plus metadata."""

from __future__ import annotations

import torch

from workbench.data import Preprocessing, get_task
from workbench.errors import WorkbenchError
from workbench.models.model import RANDOM_INIT_SEED, Model, weights_fingerprint

__all__ = ["build_sample_module", "load_sample", "sample_names"]


def sample_names() -> list[str]:
    """The shipped sample model names."""
    import sample_models

    return list(sample_models.sample_names())


def build_sample_module(name: str, *, load_weights: bool) -> torch.nn.Module:
    """The sample's module, float32 and in eval mode; seeded when not loading weights."""
    import sample_models

    if load_weights:
        module = sample_models.build_module(name, load_weights=True)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            module = sample_models.build_module(name, load_weights=False)
    return module.float().eval()


def sample_spec(name: str) -> tuple[dict, tuple[int, ...], Preprocessing]:
    """A sample's meta.json, input shape and preprocessing."""
    import sample_models

    meta = sample_models.read_meta(name)
    return (
        meta,
        tuple(int(d) for d in meta["input_shape"]),
        Preprocessing.from_dict(meta["preprocessing"]),
    )


def load_sample(
    name: str,
    *,
    pretrained: bool,
    input_shape: tuple[int, ...] | None,
    preprocessing: Preprocessing | None,
) -> Model:
    """Sample ``name`` with its trained weights (or seeded random ones), task and preprocessing."""
    meta, shape, prep = sample_spec(name)
    if input_shape is not None and tuple(input_shape) != shape:
        raise WorkbenchError(
            f"sample {name} takes input shape {shape}, not {tuple(input_shape)}",
            "drop input_shape (the sample's shape is used), or train a new sample for that shape",
        )
    if preprocessing is not None and preprocessing != prep:
        raise WorkbenchError(
            f"sample {name} was trained with preprocessing {prep}, not {preprocessing}",
            "drop preprocessing (the sample's own is used)",
        )
    module = build_sample_module(name, load_weights=pretrained)
    task = get_task(meta["task"])
    meta = dict(meta)
    if not pretrained:
        meta["init"] = f"random (torch.manual_seed({RANDOM_INIT_SEED}))"
    class_names = tuple(str(c) for c in meta.get("class_names") or task.class_names)
    return Model(
        name=name,
        source="sample",
        module=module,
        input_shape=shape,
        task=task,
        preprocessing=prep,
        class_names=class_names,
        fingerprint=weights_fingerprint(module),
        meta=meta,
    )
