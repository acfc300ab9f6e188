"""Magnitude pruning of PyTorch modules: unstructured (zeroed weights) and structured
(physically removed channels).

Prunable layers are the weights of ``Conv1d``, ``Conv2d`` and ``Linear`` modules (never
biases or normalisation layers). Their order is the order the forward pass calls them,
traced with forward pre-hooks on ``example_input``, because "first" and "last" layer mean
first and last *in the computation*, which registration order does not always match.

Unstructured pruning uses ``torch.nn.utils.prune`` (L1 magnitude) and then
``prune.remove``, so the zeros are baked into plain weights and no masks or hooks stay on
the module (the exported ONNX file is an ordinary dense graph whose zeros only pay off
once the file is compressed). With ``PruneConfig.max_layer_sparsity`` a global request
still zeroes ``round(s * N)`` weights lowest magnitude first, but no layer past its cap
(``capped_prune_counts``): a layer whose weights are small only because a batch norm
rescales them is otherwise emptied by the one threshold.

Structured pruning uses Torch-Pruning (``torch_pruning``). Removing an output channel of
one convolution means removing the matching input channel of every consumer, the
matching entries of the batch norm in between, and -- across a residual ``Add`` or a
depthwise convolution -- the same channel of every layer coupled to it. Torch-Pruning
builds that dependency graph by tracing the model once and prunes whole coupled groups,
so a pruned torchvision ResNet or MobileNetV2 stays a valid, smaller, ONNX-exportable
module. Doing this by hand for arbitrary user models would mean re-implementing that
graph, so Torch-Pruning is used rather than hand-written channel surgery. Its MAC counter
is reported too, for information only: the workbench's official counts come from the
exported ONNX artifact.

Structured choices, and why:

- Importance is the group L1 magnitude (``MagnitudeImportance(p=1)``, each group's
  scores normalised by their mean so a global ranking compares layers fairly), matching
  the L1 criterion of unstructured pruning.
- The final classifier is never pruned on its outputs (they are the classes); the first
  convolution is also ignored when ``keep_first_last`` (so the stem width, and in a ResNet
  every block residual-coupled to it, is kept).
- The channel counts are chosen here, not by Torch-Pruning's pruner, which skips a
  layer entirely when its ratio or a global threshold would empty it. Global scope
  removes exactly ``round(s * N)`` channels over all prunable groups, lowest importance
  first, but no layer loses more than ``s + (1 - s) / 2`` of its channels (it keeps at
  least half the fraction the request keeps on average; ``max_layer_sparsity`` lowers
  that cap) and every layer keeps at least one. Layer scope removes ``round(s * C)`` channels of each group (keeping >= 1).
- Then the kept channels of each layer at least ``8 * round_to`` wide are rounded to
  the nearest multiple of ``PruneConfig.round_to`` (8 by default; 1 keeps the exact
  counts; narrower layers keep exact counts, where rounding would be too coarse). ONNX Runtime's
  CPU convolutions accept any count but run far slower on odd ones (see the comment on
  ``round_to`` for the measurement), so the achieved sparsity is near, not exactly, the
  request; the report gives the achieved figure.
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from workbench.errors import WorkbenchError
from workbench.recipe import MAX_SPARSITY, PruneConfig

__all__ = [
    "PRUNABLE_TYPES",
    "LayerPruning",
    "batch_norm_scales",
    "capped_prune_counts",
    "MacsSearch",
    "PruneReport",
    "layer_sensitivity",
    "prunable_layers",
    "prune_",
    "search_structured_sparsity",
    "structured_sparsity_for_macs",
]

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class LayerPruning:
    """One prunable layer before and after pruning (weights only, biases excluded)."""

    name: str  # as in module.named_modules()
    type: str  # "Conv2d", "Linear", ...
    params_before: int  # weight elements before
    params_after: int  # weight elements after (smaller only if channels were removed)
    nonzero_before: int
    nonzero_after: int
    out_channels_before: int  # output channels (Conv) or features (Linear)
    out_channels_after: int
    kept_dense: str | None = None  # why not pruned: "first", "last", "excluded", "coupled"

    @property
    def sparsity(self) -> float:
        """Fraction of the original weights now zero or removed."""
        return 1.0 - self.nonzero_after / self.params_before if self.params_before else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "sparsity": self.sparsity}


@dataclass(frozen=True)
class PruneReport:
    """What ``prune_`` did: requested vs achieved sparsity and a per-layer table.

    ``achieved_sparsity`` is measured over what could be pruned: the fraction of weights
    zeroed in the layers not kept dense (unstructured), or of channels removed from the
    prunable channel groups, a group being channels coupled across layers that go
    together (structured). ``weight_sparsity`` is the fraction of all prunable weights
    (dense layers included) that are zero or gone. ``kept_dense`` gives each layer whose
    outputs were left whole and why: "first", "last", "excluded", or (structured)
    "coupled" when its outputs are tied to a kept layer, like a ResNet block's last conv
    added to the kept stem. MACs and parameter counts come from Torch-Pruning's counter
    on ``example_input`` (structured only; informational).
    """

    method: str
    scope: str
    requested_sparsity: float
    achieved_sparsity: float
    weight_sparsity: float
    layers: tuple[LayerPruning, ...]
    kept_dense: dict[str, str] = field(default_factory=dict)  # layer name -> reason
    macs_before: int | None = None
    macs_after: int | None = None
    params_before: int | None = None  # all parameters of the module
    params_after: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def macs_ratio(self) -> float | None:
        """MACs after / MACs before (structured only)."""
        if self.macs_before and self.macs_after is not None:
            return self.macs_after / self.macs_before
        return None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [layer.to_dict() for layer in self.layers]
        d["notes"] = list(self.notes)
        d["macs_ratio"] = self.macs_ratio
        return d


@dataclass(frozen=True)
class MacsSearch:
    """Result of ``search_structured_sparsity``: the sparsity and the MACs it gives."""

    sparsity: float  # channel sparsity to put in a structured PruneConfig
    macs_ratio: float  # MACs after / MACs before at that sparsity (Torch-Pruning's count)
    target_macs_ratio: float
    macs_before: int
    macs_after: int
    evaluations: int  # how many prune-and-count trials the search ran

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- helpers


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Run in eval mode (no batch-norm statistics updated by tracing), then restore."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


@contextmanager
def _one_thread() -> Iterator[None]:
    """Use one intra-op thread, then restore the caller's setting.

    Pruning runs batch-1 traces and small tensor ops; extra threads gain nothing there,
    and on a shared, loaded machine their spinning made a resnet18 MACs search 4-5x
    slower (measured: 6-7 s with one thread, 28-31 s with two, on two busy cores).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _check_example_input(example_input: object) -> torch.Tensor:
    if not isinstance(example_input, torch.Tensor):
        raise WorkbenchError(
            f"example_input is a {type(example_input).__name__}, not a torch.Tensor",
            "pass one input batch as a tensor, e.g. torch.zeros(1, 3, 32, 32)",
        )
    return example_input


def _run(module: nn.Module, example_input: torch.Tensor) -> None:
    try:
        module(example_input)
    except Exception as err:  # the model's own error is the useful part of the message
        raise WorkbenchError(
            f"the model does not run on example_input of shape {tuple(example_input.shape)}: {err}",
            "pass an input of the model's input shape, e.g. (1, channels, height, width)",
        ) from err


def _layer_order(module: nn.Module, example_input: torch.Tensor | None) -> tuple[list[str], int]:
    """Prunable layer names, in forward order when an input is given.

    Returns the names and how many of them the forward pass called: layers the forward
    pass never reached come last, in registration order.
    """
    registered = [n for n, m in module.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    if example_input is None:
        return registered, len(registered)
    called: list[str] = []
    handles = []
    for name, m in module.named_modules():
        if isinstance(m, PRUNABLE_TYPES):

            def hook(_m: nn.Module, _inputs: object, name: str = name) -> None:
                if name not in called:
                    called.append(name)

            handles.append(m.register_forward_pre_hook(hook))
    try:
        with torch.no_grad(), _eval_mode(module):
            _run(module, example_input)
    finally:
        for h in handles:
            h.remove()
    return called + [n for n in registered if n not in called], len(called)


def prunable_layers(module: nn.Module, example_input: torch.Tensor | None = None) -> list[str]:
    """Names of the prunable layers (Conv1d/Conv2d/Linear); forward order if given an input."""
    return _layer_order(module, example_input)[0]


def _check_names(
    module: nn.Module, names: Sequence[str], prunable: Sequence[str], what: str
) -> None:
    """Every name must be a module of ``module``; otherwise say which and what exists."""
    known = [n for n, _ in module.named_modules() if n]
    for name in names:
        if name and name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise WorkbenchError(
                f"layer {name!r} in {what} is not a module of this model{hint}",
                "use names from model.named_modules(); the prunable layers are: "
                + ", ".join(prunable),
            )
        if name and not any(_is_under(p, [name]) for p in prunable):
            kind = type(dict(module.named_modules())[name]).__name__
            raise WorkbenchError(
                f"layer {name!r} in {what} is a {kind} and holds no prunable layer, so "
                f"naming it changes nothing",
                "name a Conv/Linear layer or a block containing one; the prunable layers are: "
                + ", ".join(prunable),
            )


def _is_under(name: str, prefixes: Sequence[str]) -> bool:
    return any(p == "" or name == p or name.startswith(p + ".") for p in prefixes)


def _dense_reasons(order: list[str], n_called: int, config: PruneConfig) -> dict[str, str]:
    reasons: dict[str, str] = {}
    called = order[:n_called]
    for name in order:
        if _is_under(name, config.exclude):
            reasons[name] = "excluded"
    if called and config.keep_first_last:
        reasons.setdefault(called[0], "first")
        reasons.setdefault(called[-1], "last")
    return reasons


@dataclass
class _Snapshot:
    params: int
    nonzero: int
    out_channels: int


def _snapshot(m: nn.Module) -> _Snapshot:
    w = m.weight.detach()
    return _Snapshot(params=w.numel(), nonzero=int(torch.count_nonzero(w)), out_channels=w.shape[0])


def _count_macs(module: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(module, example_input)
    return int(macs), int(params)


# ----------------------------------------------------------------------- unstructured


def capped_prune_counts(magnitudes: Sequence[np.ndarray], sparsity: float, cap: float) -> list[int]:
    """How many weights to zero in each layer so that ``round(sparsity * N)`` go in all,
    lowest magnitude first over all layers, but no layer loses more than
    ``floor(cap * n)`` of its ``n`` weights.

    Water-filling: the global ranking is taken over the layers not yet at their cap; a
    layer the ranking would push past its cap is fixed there, and its surplus goes back
    to the others' ranking, until no layer exceeds its cap. With ``cap >= sparsity`` the
    request is always met (every layer at the cap would remove at least as much).

    Args:
        magnitudes: each layer's absolute weights (any shape).
        sparsity: the fraction of all the weights to zero.
        cap: the largest fraction of one layer's weights to zero.
    """
    flat = [np.abs(np.asarray(m, dtype=np.float32)).ravel() for m in magnitudes]
    sizes = [f.size for f in flat]
    limits = [math.floor(cap * n + 1e-9) for n in sizes]
    wanted = min(round(sparsity * sum(sizes)), sum(limits))
    fixed: dict[int, int] = {}  # layer -> count, for the layers held at their cap
    while True:
        free = [i for i in range(len(flat)) if i not in fixed]
        k = wanted - sum(fixed.values())
        counts = dict.fromkeys(free, 0)
        if k > 0 and free:
            pool = np.concatenate([flat[i] for i in free])
            owner = np.concatenate([np.full(sizes[i], i, dtype=np.int32) for i in free])
            smallest = np.argpartition(pool, k - 1)[:k] if k < pool.size else np.arange(pool.size)
            for i, c in zip(*np.unique(owner[smallest], return_counts=True), strict=True):
                counts[int(i)] = int(c)
        over = [i for i in free if counts[i] > limits[i]]
        if not over:
            return [fixed.get(i, counts.get(i, 0)) for i in range(len(flat))]
        for i in over:
            fixed[i] = limits[i]


def batch_norm_scales(
    module: nn.Module, names: Sequence[str], example_input: torch.Tensor
) -> dict[str, torch.Tensor]:
    """For each layer of ``names`` whose output goes straight into a batch norm, that
    norm's per-channel scale ``|gamma| / sqrt(running_var + eps)`` (eval mode).

    The pairing is traced, not guessed from module order: a forward pass on
    ``example_input`` records each layer's output tensor, and a batch norm is paired with
    the layer whose output it receives. Layers feeding anything else are left out.
    """
    modules = dict(module.named_modules())
    # Each output is held until the pass ends, so no other tensor can take its id.
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    scales: dict[str, torch.Tensor] = {}
    hooks = []

    def record(name: str):
        def hook(_m, _inputs, output):
            if isinstance(output, torch.Tensor):
                produced[id(output)] = (name, output)

        return hook

    def pair(bn: nn.Module):
        def hook(_m, inputs):
            entry = produced.get(id(inputs[0])) if inputs else None
            name = entry[0] if entry is not None and entry[1] is inputs[0] else None
            if name is not None and bn.track_running_stats and bn.running_var is not None:
                gamma = bn.weight.detach().abs() if bn.affine else torch.ones_like(bn.running_var)
                scales[name] = gamma / torch.sqrt(bn.running_var.detach() + bn.eps)

        return hook

    try:
        for n in names:
            hooks.append(modules[n].register_forward_hook(record(n)))
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                hooks.append(m.register_forward_pre_hook(pair(m)))
        with _eval_mode(module), torch.no_grad():
            _run(module, example_input)
    finally:
        for h in hooks:
            h.remove()
    return {n: s for n, s in scales.items() if s.numel() == modules[n].weight.shape[0]}


def _importance_scores(
    modules: dict[str, nn.Module], targets: list[str], scales: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Each target's weights ranked as |w|, times its batch norm's channel scale if any."""
    scores = {}
    for n in targets:
        w = modules[n].weight.detach().abs()
        if n in scales:
            w = w * scales[n].to(w.dtype).view(-1, *([1] * (w.dim() - 1)))
        scores[n] = w
    return scores


def _prune_unstructured(
    modules: dict[str, nn.Module],
    targets: list[str],
    config: PruneConfig,
    scales: dict[str, torch.Tensor] | None = None,
) -> None:
    params = [(modules[n], "weight") for n in targets]
    scores = _importance_scores(modules, targets, scales or {})
    if config.scope == "global" and config.max_layer_sparsity is not None:
        # One ranking, but no layer beyond its cap (see capped_prune_counts): the L1
        # pruning of each layer then zeroes exactly its count, lowest score first.
        counts = capped_prune_counts(
            [scores[n].cpu().numpy() for n in targets],
            config.sparsity,
            config.max_layer_sparsity,
        )
        for (m, p), n, count in zip(params, targets, counts, strict=True):
            torch_prune.l1_unstructured(m, p, amount=int(count), importance_scores=scores[n])
    elif config.scope == "global":
        # One threshold over all targets: exactly round(sparsity * N) weights are zeroed.
        torch_prune.global_unstructured(
            params,
            pruning_method=torch_prune.L1Unstructured,
            importance_scores={(modules[n], "weight"): scores[n] for n in targets},
            amount=config.sparsity,
        )
    else:
        # Within one layer a channel scale only reorders weights across channels.
        for (m, p), n in zip(params, targets, strict=True):
            torch_prune.l1_unstructured(m, p, amount=config.sparsity, importance_scores=scores[n])
    for m, p in params:
        torch_prune.remove(m, p)  # bake the mask into the weight: no hooks, no weight_orig


# ------------------------------------------------------------------------- structured


def _max_layer_ratio(config: PruneConfig) -> float:
    ratio = config.sparsity
    if config.scope == "global":
        ratio = config.sparsity + (1.0 - config.sparsity) / 2.0
    if config.max_layer_sparsity is not None:
        ratio = min(ratio, config.max_layer_sparsity)
    return ratio


def _has_channel_groups(graph: object, group: object) -> bool:
    """True if a layer in the group splits channels into groups (grouped conv, GroupNorm).

    Depthwise convolutions do not count: Torch-Pruning prunes them channel by channel.
    """
    for dep, _ in group:  # type: ignore[attr-defined]
        m = dep.target.module
        if isinstance(m, nn.modules.conv._ConvNd) and m.groups == m.out_channels:
            continue
        pruner = graph.get_pruner_of_module(m)  # type: ignore[attr-defined]
        if pruner is not None and isinstance(m, nn.Module):
            if pruner.get_out_channel_groups(m) > 1 or pruner.get_in_channel_groups(m) > 1:
                return True
    return False


def _prune_structured(
    module: nn.Module,
    modules: dict[str, nn.Module],
    order: list[str],
    n_called: int,
    config: PruneConfig,
    example_input: torch.Tensor,
) -> tuple[list[str], set[nn.Module], int, int]:
    """Remove the lowest-magnitude output channels of every prunable, coupled group.

    Returns notes, the layers whose outputs could be pruned, and the channels removed
    out of the channels that could be.

    Torch-Pruning supplies the dependency graph, the group importance and the pruning
    itself; the channel counts are chosen here. Its own pruner silently skips a group
    that its ratio or global threshold would empty, leaving that layer *unpruned*, so the
    MACs would no longer fall as the sparsity rises; instead each group is capped at
    ``_max_layer_ratio`` (and always keeps a channel) and the rest of the request goes to
    the other groups.
    """
    import torch_pruning as tp

    notes: list[str] = []
    called = order[:n_called]
    ignored: list[nn.Module] = []
    if called:
        ignored.append(modules[called[-1]])  # the classifier: its outputs are the classes
        if config.keep_first_last:
            ignored.append(modules[called[0]])
    all_modules = dict(module.named_modules())
    ignored += [all_modules[name] for name in config.exclude if name in all_modules]
    ignored = [sub for m in ignored for sub in m.modules()]
    name_of = {m: n for n, m in all_modules.items()}

    graph = tp.DependencyGraph().build_dependency(module, example_inputs=example_input)
    importance = tp.importance.MagnitudeImportance(p=1)  # group L1, mean-normalised per group
    max_ratio = _max_layer_ratio(config)
    records = []  # (root, pruning_fn, channels, importance, cap)
    prunable_outputs: set[nn.Module] = set()
    grouped: list[str] = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=PRUNABLE_TYPES):
        dep = group[0].dep
        root = dep.target.module
        if _has_channel_groups(graph, group):
            grouped.append(name_of.get(root, "?"))
            continue
        channels = graph.get_out_channels(root)
        imp = importance(group)
        if imp is None or len(imp) != channels or channels < 2:
            continue
        cap = channels - max(1, math.floor(channels * (1.0 - max_ratio) + 1e-9))
        records.append((root, dep.handler, channels, imp.detach().cpu(), cap))
        prunable_outputs |= {
            d.target.module for d, _ in group if graph.is_out_channel_pruning_fn(d.handler)
        }

    if grouped:
        notes.append(
            f"{len(grouped)} layer(s) with grouped channels (grouped convolutions, GroupNorm) "
            f"left unpruned: {', '.join(grouped[:5])}{', ...' if len(grouped) > 5 else ''}; "
            "the sparsity applies to the other layers only"
        )
    chosen: list[list[int]] = [[] for _ in records]
    capped: set[int] = set()  # groups that would have lost more than their cap
    if config.scope == "global":
        # One ranking over all groups: the round(s * N) least important channels go,
        # skipping a group's channels once it reaches its cap.
        wanted = round(config.sparsity * sum(r[2] for r in records))
        ranked = sorted(
            (float(score), g, c) for g, r in enumerate(records) for c, score in enumerate(r[3])
        )
        taken = 0
        for _, g, c in ranked:
            if taken == wanted:
                break
            if len(chosen[g]) < records[g][4]:
                chosen[g].append(c)
                taken += 1
            else:
                capped.add(g)
        if taken < wanted:
            notes.append(f"only {taken} of the {wanted} channels requested could be removed")
    else:
        for g, (_, _, channels, imp, cap) in enumerate(records):
            n = round(config.sparsity * channels)
            if n > cap:
                capped.add(g)
            chosen[g] = torch.argsort(imp)[: min(n, cap)].tolist()

    if config.round_to > 1:
        # Keep a multiple of round_to channels per layer (the nearest, at least one
        # multiple); the lowest-importance channels of the group are the ones removed.
        # Layers narrower than 8 * round_to keep exact counts: there a step of round_to
        # would be over 1/8 of the layer, and a slider move would change nothing.
        for g, (_, _, channels, imp, cap) in enumerate(records):
            if channels < 8 * config.round_to or not chosen[g]:
                continue
            kept = channels - len(chosen[g])
            kept = max(config.round_to, int(round(kept / config.round_to)) * config.round_to)
            n = min(channels - kept, cap) if channels - kept > 0 else 0
            chosen[g] = torch.argsort(imp)[:n].tolist()

    for g, ((root, fn, channels, _, cap), idxs) in enumerate(zip(records, chosen, strict=True)):
        if g in capped:
            notes.append(
                f"{name_of.get(root, '?')}: capped at {cap} of {channels} channels removed"
            )
        if idxs:
            group = graph.get_pruning_group(root, fn, sorted(idxs))
            if graph.check_pruning_group(group):
                group.prune()
            else:
                notes.append(f"{name_of.get(root, '?')}: Torch-Pruning refused the group")
    removed = sum(len(idxs) for idxs in chosen)
    return notes, prunable_outputs, removed, sum(r[2] for r in records)


# ----------------------------------------------------------------------------- prune_


def emptied_layers_note(emptied: list[str]) -> str:
    """The note for the layers pruning emptied. A global threshold can take every weight
    of a small-magnitude layer (e.g. a depthwise conv): its output then no longer
    depends on its input."""
    return (
        f"{len(emptied)} layer(s) lost every weight ({', '.join(emptied[:5])}"
        f"{', ...' if len(emptied) > 5 else ''}), so their outputs no longer depend on the "
        "input: cap each layer (max_layer_sparsity=0.98, CLI --max-layer-sparsity), lower "
        "the sparsity, prune per layer (scope='layer'), or exclude them"
    )


def prune_(module: nn.Module, config: PruneConfig, example_input: torch.Tensor) -> PruneReport:
    """Prune ``module`` in place by weight magnitude as ``config`` says; return what changed.

    Args:
        module: the model; it is modified in place (weights zeroed, or channels removed).
        config: method (unstructured/structured), sparsity, scope, dense layers.
        example_input: one input batch; traces the forward order (and, for structured
            pruning, the channel dependencies). Batch-norm statistics are not touched.

    Raises:
        WorkbenchError: unknown layer names in ``config.exclude``, an input the model does
            not run on, or no layer left to prune.
    """
    with _one_thread():
        return _prune(module, config, example_input)


def _prune(module: nn.Module, config: PruneConfig, example_input: torch.Tensor) -> PruneReport:
    if not isinstance(config, PruneConfig):
        raise WorkbenchError(
            f"prune_ needs a PruneConfig, got {type(config).__name__}", "pass PruneConfig(...)"
        )
    if not isinstance(module, nn.Module):
        raise WorkbenchError(
            f"prune_ needs a torch.nn.Module, got {type(module).__name__}",
            "pass the PyTorch model (load ONNX models through the model registry instead)",
        )
    example_input = _check_example_input(example_input)
    order, n_called = _layer_order(module, example_input)
    if not order:
        raise WorkbenchError(
            f"{type(module).__name__} has no Conv1d, Conv2d or Linear layer to prune",
            "prune a model built from those layers, or drop the pruning step",
        )
    _check_names(module, config.exclude, order, "exclude")
    dense = _dense_reasons(order, n_called, config)
    if config.method == "structured" and n_called:
        # The classifier's outputs are the classes: never removed, whatever keep_first_last says.
        dense.setdefault(order[n_called - 1], "last")
    modules = dict(module.named_modules())
    targets = [n for n in order if n not in dense]
    if not targets and config.sparsity > 0:
        raise WorkbenchError(
            f"no layer is left to prune: all {len(order)} prunable layers are kept dense "
            f"({', '.join(f'{n}: {r}' for n, r in dense.items())})",
            "remove names from exclude, or set keep_first_last=False",
        )

    before = {n: _snapshot(modules[n]) for n in order}
    macs_before = macs_after = params_before = params_after = None
    notes: list[str] = []
    removed = prunable_channels = 0

    if config.method == "unstructured":
        if targets and config.sparsity > 0:
            scales = (
                batch_norm_scales(module, targets, example_input)
                if config.importance == "bn-scaled"
                else None
            )
            _prune_unstructured(modules, targets, config, scales)
    else:
        macs_before, params_before = _count_macs(module, example_input)
        if config.sparsity > 0:
            with torch.enable_grad(), _eval_mode(module):  # the tracer follows grad_fn
                try:
                    notes, outputs, removed, prunable_channels = _prune_structured(
                        module, modules, order, n_called, config, example_input
                    )
                except WorkbenchError:
                    raise
                except Exception as exc:  # noqa: BLE001 - Torch-Pruning on an unforeseen graph
                    raise WorkbenchError(
                        f"structured pruning failed on {type(module).__name__}: Torch-Pruning "
                        f"could not follow its channel dependencies ({type(exc).__name__}: {exc})",
                        "use unstructured pruning, or exclude the layers involved (exclude=[...], "
                        "CLI --exclude NAME)",
                    ) from exc
            for name in targets:
                if modules[name] not in outputs:
                    # e.g. a ResNet block's last conv, added to the kept stem's output
                    dense[name] = "coupled"
        macs_after, params_after = _count_macs(module, example_input)

    after = {n: _snapshot(modules[n]) for n in order}
    rows = tuple(
        LayerPruning(
            name=n,
            type=type(modules[n]).__name__,
            params_before=before[n].params,
            params_after=after[n].params,
            nonzero_before=before[n].nonzero,
            nonzero_after=after[n].nonzero,
            out_channels_before=before[n].out_channels,
            out_channels_after=after[n].out_channels,
            kept_dense=dense.get(n),
        )
        for n in order
    )
    pruned_rows = [r for r in rows if r.kept_dense is None]
    if config.method == "unstructured":
        total = sum(r.params_before for r in pruned_rows)
        achieved = 1.0 - sum(r.nonzero_after for r in pruned_rows) / total if total else 0.0
    else:
        achieved = removed / prunable_channels if prunable_channels else 0.0
    emptied = [r.name for r in pruned_rows if r.nonzero_before and not r.nonzero_after]
    if config.method == "unstructured" and emptied:
        notes.append(emptied_layers_note(emptied))
    all_params = sum(r.params_before for r in rows)
    weight_sparsity = 1.0 - sum(r.nonzero_after for r in rows) / all_params if all_params else 0.0
    return PruneReport(
        method=config.method,
        scope=config.scope,
        requested_sparsity=config.sparsity,
        achieved_sparsity=achieved,
        weight_sparsity=weight_sparsity,
        layers=rows,
        kept_dense={r.name: r.kept_dense for r in rows if r.kept_dense},
        macs_before=macs_before,
        macs_after=macs_after,
        params_before=params_before,
        params_after=params_after,
        notes=tuple(notes),
    )


# ----------------------------------------------------------------- MACs-target search


def search_structured_sparsity(
    model: nn.Module | Callable[[], nn.Module],
    example_input: torch.Tensor,
    target_macs_ratio: float = 0.5,
    *,
    tol: float = 0.01,
    config: PruneConfig | None = None,
    max_evaluations: int = 24,
) -> MacsSearch:
    """Find the structured channel sparsity that leaves ``target_macs_ratio`` of the MACs.

    Bisection on the sparsity: each trial prunes a fresh copy of the model with
    ``config`` (method forced to structured) and counts MACs with Torch-Pruning on
    ``example_input``. The model itself is never modified.

    Args:
        model: the unpruned module (deep-copied per trial), or a factory returning a new
            one each call -- with the same weights every call (load a state_dict, or seed
            the initialisation), since magnitude pruning depends on them.
        example_input: one input batch.
        target_macs_ratio: MACs after / MACs before wanted, e.g. 0.5 to halve the MACs.
        tol: stop when the achieved ratio is within this of the target.
        config: scope, keep_first_last and exclude to use (default: PruneConfig()).
        max_evaluations: upper bound on prune-and-count trials.

    Returns:
        the trial whose MAC ratio is closest to the target.
    """
    if not 0.0 < float(target_macs_ratio) < 1.0:
        raise WorkbenchError(
            f"target_macs_ratio {target_macs_ratio} is out of range",
            "use a fraction of the MACs to keep between 0 and 1 (0.5 halves them)",
        )
    if isinstance(model, nn.Module):  # checked first: a Module is callable too
        module = model

        def fresh() -> nn.Module:
            return copy.deepcopy(module)
    elif callable(model):
        fresh = model
    else:
        raise WorkbenchError(
            f"expected a torch.nn.Module or a function returning one, got {type(model).__name__}",
            "pass the PyTorch model",
        )
    base = replace(config or PruneConfig(), method="structured", importance="magnitude")
    example_input = _check_example_input(example_input)
    trials: list[tuple[float, float, int, int]] = []  # sparsity, ratio, before, after

    def trial(s: float) -> float:
        # A per-layer cap below a trial's sparsity is raised to it, as a gradual step's is.
        cap = base.max_layer_sparsity
        capped = replace(base, sparsity=s, max_layer_sparsity=None if cap is None else max(cap, s))
        report = prune_(fresh(), capped, example_input)
        assert report.macs_before is not None and report.macs_after is not None
        ratio = report.macs_after / report.macs_before
        trials.append((s, ratio, report.macs_before, report.macs_after))
        return ratio

    lo, hi = 0.0, MAX_SPARSITY
    if trial(hi) > target_macs_ratio + tol:
        s, ratio, _, _ = trials[-1]
        raise WorkbenchError(
            f"structured pruning at the maximum sparsity {s} keeps {ratio:.2f} of the MACs, "
            f"more than the target {target_macs_ratio}",
            "aim for a larger MAC ratio, or allow the first/last or excluded layers to be pruned",
        )
    while len(trials) < max_evaluations:
        mid = round((lo + hi) / 2.0, 4)  # a sparsity a person can type into a config
        ratio = trial(mid)
        if abs(ratio - target_macs_ratio) <= tol or hi - lo < 1e-3:
            break
        if ratio > target_macs_ratio:
            lo = mid
        else:
            hi = mid
    s, ratio, before, after = min(trials, key=lambda t: (abs(t[1] - target_macs_ratio), t[0]))
    return MacsSearch(
        sparsity=s,
        macs_ratio=ratio,
        target_macs_ratio=float(target_macs_ratio),
        macs_before=before,
        macs_after=after,
        evaluations=len(trials),
    )


def structured_sparsity_for_macs(
    model: nn.Module | Callable[[], nn.Module],
    example_input: torch.Tensor,
    target_macs_ratio: float = 0.5,
    tol: float = 0.01,
    *,
    config: PruneConfig | None = None,
) -> float:
    """The structured sparsity that leaves ``target_macs_ratio`` of the MACs (0.5 halves them).

    A shortcut for ``search_structured_sparsity(...).sparsity``; see there for the details.
    """
    return search_structured_sparsity(
        model, example_input, target_macs_ratio, tol=tol, config=config
    ).sparsity


# ------------------------------------------------------------------ layer sensitivity


def _prune_one_structured(
    model: nn.Module, layer: nn.Module, sparsity: float, example_input: torch.Tensor
) -> None:
    """Remove the lowest-L1 output channels of ``layer`` (and everything coupled to them)."""
    import torch_pruning as tp

    with torch.enable_grad(), _eval_mode(model):
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
        channels = graph.get_out_channels(layer)
        n = min(int(round(sparsity * channels)), channels - 1)
        if n <= 0:
            return
        full = graph.get_pruning_group(
            layer, graph.get_pruner_of_module(layer).prune_out_channels, list(range(channels))
        )
        imp = tp.importance.MagnitudeImportance(p=1)(full)
        idxs = torch.argsort(imp)[:n].tolist()
        group = graph.get_pruning_group(
            layer, graph.get_pruner_of_module(layer).prune_out_channels, idxs
        )
        if graph.check_pruning_group(group):
            group.prune()


def layer_sensitivity(
    module: nn.Module,
    evaluate_fn: Callable[[nn.Module], float],
    *,
    sparsity: float = 0.5,
    method: str = "unstructured",
    layers: Sequence[str] | None = None,
    example_input: torch.Tensor | None = None,
) -> list[dict]:
    """Accuracy when each prunable layer alone is pruned: one row per layer, for a chart.

    Each layer is pruned on a deep copy of ``module`` (which is never modified) and
    ``evaluate_fn(copy)`` gives its accuracy; ``evaluate_fn(module)`` is called once first
    for the baseline.

    Args:
        sparsity: fraction of the layer's weights (unstructured) or output channels
            (structured) removed.
        method: "unstructured" (L1, that layer only) or "structured" (that layer's lowest-L1
            output channels and every layer coupled to them; the classifier, whose outputs
            are the classes, is skipped).
        layers: names to test (default: every prunable layer).
        example_input: one input batch; orders rows by forward order, and is required for
            structured pruning. Without it rows follow registration order.

    Returns:
        rows ``{layer, type, params, sparsity, accuracy, baseline_accuracy, drop}`` in layer
        order, where ``drop = baseline_accuracy - accuracy``.
    """
    if method not in ("unstructured", "structured"):
        raise WorkbenchError(
            f"pruning method {method!r} is not supported", "use unstructured or structured"
        )
    if isinstance(sparsity, bool) or not 0.0 <= float(sparsity) <= MAX_SPARSITY:
        raise WorkbenchError(
            f"sparsity {sparsity!r} is out of range", f"use a fraction from 0 to {MAX_SPARSITY}"
        )
    if method == "structured" and example_input is None:
        raise WorkbenchError(
            "structured layer sensitivity needs example_input to trace channel dependencies",
            "pass example_input=torch.zeros(1, channels, height, width)",
        )
    if example_input is not None:
        example_input = _check_example_input(example_input)
    prunable, n_called = _layer_order(module, example_input)
    order = list(prunable)
    if layers is not None:
        _check_names(module, list(layers), prunable, "layers")
        order = [n for n in order if _is_under(n, list(layers))]
    if method == "structured" and n_called:
        classifier = prunable[n_called - 1]
        order = [n for n in order if n != classifier]

    baseline = float(evaluate_fn(module))
    modules = dict(module.named_modules())
    rows = []
    for name in order:
        trial = copy.deepcopy(module)
        layer = dict(trial.named_modules())[name]
        if method == "unstructured":
            torch_prune.l1_unstructured(layer, "weight", amount=float(sparsity))
            torch_prune.remove(layer, "weight")
        else:
            assert example_input is not None
            with _one_thread():
                _prune_one_structured(trial, layer, float(sparsity), example_input)
        accuracy = float(evaluate_fn(trial))
        rows.append(
            {
                "layer": name,
                "type": type(modules[name]).__name__,
                "params": int(modules[name].weight.numel()),
                "sparsity": float(sparsity),
                "accuracy": accuracy,
                "baseline_accuracy": baseline,
                "drop": baseline - accuracy,
            }
        )
    return rows
