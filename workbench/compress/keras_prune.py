"""Magnitude pruning of Keras models: unstructured, global or per layer, in place.

The Keras counterpart of :func:`workbench.compress.prune_` for PyTorch: the same
:class:`~workbench.recipe.PruneConfig` and the same report (``PruneReport.to_dict()``
keys). Prunable layers are the kernels of ``Conv1D``, ``Conv2D``, ``DepthwiseConv2D``
and ``Dense`` layers (never biases or normalisation layers), in the order of
``model.layers``, which for a functional or sequential model is the order of the
computation; layers of nested models are named ``outer/inner``.

- ``scope="global"``: one magnitude threshold over every prunable kernel: exactly
  ``round(sparsity * N)`` weights of the ``N`` prunable ones are zeroed, smallest
  ``|w|`` first (as ``torch.nn.utils.prune.global_unstructured`` does).
- ``scope="layer"``: ``round(sparsity * n)`` of each layer's ``n`` weights.
- ``max_layer_sparsity``: global, but no layer loses more than that fraction of its
  weights; the rest goes to the other layers (``prune.capped_prune_counts``).
- ``keep_first_last`` and ``exclude`` (layer names) leave layers dense, as for PyTorch.

The zeros are written into the kernels themselves (no masks or wrappers), so the
TFLite export is an ordinary dense model whose zeros pay off once compressed.

Structured pruning (removing channels) is refused: rebuilding a Keras graph with
fewer channels, coupled across residual adds and depthwise layers, is what
Torch-Pruning does for PyTorch and has no maintained Keras 3 equivalent.
"""

from __future__ import annotations

import difflib

import numpy as np

from workbench.errors import WorkbenchError
from workbench.recipe import PruneConfig

__all__ = ["KERAS_PRUNABLE_TYPES", "keras_prunable_layers", "prune_keras"]

KERAS_PRUNABLE_TYPES = ("Conv1D", "Conv2D", "DepthwiseConv2D", "Dense")


def _walk(layers, prefix: str = ""):
    """(name, layer) for every layer, nested models' layers included, in model order."""
    for layer in layers:
        name = f"{prefix}{layer.name}"
        yield name, layer
        inner = getattr(layer, "layers", None)
        if inner:
            yield from _walk(inner, name + "/")


def _is_prunable(layer) -> bool:
    return (
        type(layer).__name__ in KERAS_PRUNABLE_TYPES and getattr(layer, "kernel", None) is not None
    )


def keras_prunable_layers(model) -> list[str]:
    """Names of the prunable layers of a Keras model, in computation order."""
    return [name for name, layer in _walk(model.layers) if _is_prunable(layer)]


def _is_under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + "/") for p in prefixes)


def _check_model(model) -> None:
    from workbench._tf import keras

    if not isinstance(model, keras().Model):
        raise WorkbenchError(
            f"prune_keras needs a Keras model, got {type(model).__name__}",
            "pass a keras.Model (prune PyTorch modules with workbench.compress.prune_)",
        )
    if not model.built or not model.weights:
        raise WorkbenchError(
            f"the Keras model {model.name!r} has no weights yet",
            "build the model (call it once, or give its Input a shape) before pruning",
        )


def _check_exclude(model, exclude, prunable: list[str]) -> None:
    known = [name for name, _ in _walk(model.layers)]
    for name in exclude:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise WorkbenchError(
                f"layer {name!r} in exclude is not a layer of this model{hint}",
                "use names from model.layers; the prunable layers are: " + ", ".join(prunable),
            )
        if not any(_is_under(p, [name]) for p in prunable):
            raise WorkbenchError(
                f"layer {name!r} in exclude holds no prunable layer, so naming it changes nothing",
                "name a Conv/Dense layer or a nested model containing one; the prunable "
                "layers are: " + ", ".join(prunable),
            )


def _out_channels(layer, kernel: np.ndarray) -> int:
    if type(layer).__name__ == "DepthwiseConv2D":
        return int(kernel.shape[-2] * kernel.shape[-1])  # (kh, kw, C, multiplier)
    return int(kernel.shape[-1])


def prune_keras(keras_model, config: PruneConfig) -> dict:
    """Prune ``keras_model``'s kernels in place by magnitude as ``config`` says.

    Returns the report as a dict with the keys of the PyTorch prune step's report
    (``PruneReport.to_dict()``): requested and achieved sparsity, the sparsity of all
    prunable weights, and a row per prunable layer.

    Raises:
        WorkbenchError: structured pruning (not available for Keras models), a model
            that is not a built Keras model, unknown or non-prunable names in
            ``config.exclude``, or no layer left to prune.
    """
    from workbench.compress.prune import LayerPruning, PruneReport, emptied_layers_note

    if not isinstance(config, PruneConfig):
        raise WorkbenchError(
            f"prune_keras needs a PruneConfig, got {type(config).__name__}",
            "pass PruneConfig(...)",
        )
    if config.method != "unstructured":
        raise WorkbenchError(
            "structured pruning (removing channels) is not available for Keras models",
            "use unstructured pruning (method='unstructured', CLI --prune unstructured), or "
            "load the PyTorch model to remove channels",
        )
    _check_model(keras_model)
    layers = {name: layer for name, layer in _walk(keras_model.layers) if _is_prunable(layer)}
    order = list(layers)
    if not order:
        raise WorkbenchError(
            f"the Keras model {keras_model.name!r} has no Conv1D, Conv2D, DepthwiseConv2D or "
            "Dense layer to prune",
            "prune a model built from those layers, or drop the pruning step",
        )
    _check_exclude(keras_model, config.exclude, order)
    dense: dict[str, str] = {}
    for name in order:
        if _is_under(name, config.exclude):
            dense[name] = "excluded"
    if config.keep_first_last:
        dense.setdefault(order[0], "first")
        dense.setdefault(order[-1], "last")
    targets = [n for n in order if n not in dense]
    if not targets and config.sparsity > 0:
        raise WorkbenchError(
            f"no layer is left to prune: all {len(order)} prunable layers are kept dense "
            f"({', '.join(f'{n}: {r}' for n, r in dense.items())})",
            "remove names from exclude, or set keep_first_last=False",
        )

    kernels = {n: np.asarray(layers[n].kernel.numpy()) for n in order}
    before = {n: int(np.count_nonzero(kernels[n])) for n in order}
    if targets and config.sparsity > 0:
        _zero_smallest_(kernels, targets, config)
        for n in targets:
            layers[n].kernel.assign(kernels[n])

    rows = tuple(
        LayerPruning(
            name=n,
            type=type(layers[n]).__name__,
            params_before=int(kernels[n].size),
            params_after=int(kernels[n].size),
            nonzero_before=before[n],
            nonzero_after=int(np.count_nonzero(kernels[n])),
            out_channels_before=_out_channels(layers[n], kernels[n]),
            out_channels_after=_out_channels(layers[n], kernels[n]),
            kept_dense=dense.get(n),
        )
        for n in order
    )
    pruned = [r for r in rows if r.kept_dense is None]
    total = sum(r.params_before for r in pruned)
    achieved = 1.0 - sum(r.nonzero_after for r in pruned) / total if total else 0.0
    all_params = sum(r.params_before for r in rows)
    weight_sparsity = 1.0 - sum(r.nonzero_after for r in rows) / all_params if all_params else 0.0
    notes = []
    emptied = [r.name for r in pruned if r.nonzero_before and not r.nonzero_after]
    if emptied:
        notes.append(emptied_layers_note(emptied))
    return PruneReport(
        method=config.method,
        scope=config.scope,
        requested_sparsity=config.sparsity,
        achieved_sparsity=achieved,
        weight_sparsity=weight_sparsity,
        layers=rows,
        kept_dense={r.name: r.kept_dense for r in rows if r.kept_dense},
        notes=tuple(notes),
    ).to_dict()


def _zero_smallest_(kernels: dict[str, np.ndarray], targets: list[str], config: PruneConfig):
    """Zero the smallest-magnitude weights of ``targets`` in place (exact counts)."""
    if config.scope == "global" and config.max_layer_sparsity is not None:
        from workbench.compress.prune import capped_prune_counts

        counts = capped_prune_counts(
            [kernels[n] for n in targets], config.sparsity, config.max_layer_sparsity
        )
        for n, k in zip(targets, counts, strict=True):
            if k:
                w = kernels[n]
                flat = w.ravel().copy()
                flat[np.argpartition(np.abs(flat), k - 1)[:k]] = 0
                kernels[n] = flat.reshape(w.shape)
        return
    if config.scope == "global":
        flat = np.concatenate([np.abs(kernels[n]).ravel() for n in targets])
        k = round(config.sparsity * flat.size)
        mask = np.ones(flat.size, dtype=bool)
        if k:
            mask[np.argpartition(flat, k - 1)[:k]] = False
        start = 0
        for n in targets:
            size = kernels[n].size
            kernels[n] = np.where(
                mask[start : start + size].reshape(kernels[n].shape), kernels[n], 0
            ).astype(kernels[n].dtype)
            start += size
        return
    for n in targets:
        w = kernels[n]
        k = round(config.sparsity * w.size)
        if k:
            flat = w.ravel().copy()
            flat[np.argpartition(np.abs(flat), k - 1)[:k]] = 0
            kernels[n] = flat.reshape(w.shape)
