"""Pruning: exact unstructured sparsity, structured channel removal that keeps models
runnable and exportable, the MACs-target search and per-layer sensitivity."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch_pruning as tp
from torch import nn

from workbench.compress import (
    layer_sensitivity,
    prunable_layers,
    prune_,
    search_structured_sparsity,
    structured_sparsity_for_macs,
)
from workbench.errors import WorkbenchError
from workbench.recipe import PruneConfig


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Batch-1 tensors: extra threads only contend on a shared machine (and slow it 4x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyNet(nn.Module):
    """Head registered before body, so registration order differs from forward order."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10)
        )
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


FORWARD_ORDER = ["body.0", "body.3", "head.1", "head.3"]


def tiny(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet().eval()


X8 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
X32 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def weight_stats(module: nn.Module, names: list[str]) -> tuple[int, int]:
    mods = dict(module.named_modules())
    total = sum(mods[n].weight.numel() for n in names)
    zeros = sum(int((mods[n].weight == 0).sum()) for n in names)
    return total, zeros


# ------------------------------------------------------------------------ layer order


def test_prunable_layers_follow_the_forward_pass_not_registration():
    m = tiny()
    assert prunable_layers(m) == ["head.1", "head.3", "body.0", "body.3"]
    assert prunable_layers(m, X8) == FORWARD_ORDER


def test_first_and_last_are_taken_in_forward_order():
    report = prune_(tiny(), PruneConfig(sparsity=0.5), X8)
    assert report.kept_dense == {"body.0": "first", "head.3": "last"}
    assert [row.name for row in report.layers] == FORWARD_ORDER


# ----------------------------------------------------------------------- unstructured


def test_global_unstructured_hits_the_requested_sparsity_exactly():
    m = tiny()
    dense_before = {n: dict(m.named_modules())[n].weight.clone() for n in ("body.0", "head.3")}
    report = prune_(m, PruneConfig(sparsity=0.6, scope="global"), X8)
    total, zeros = weight_stats(m, ["body.3", "head.1"])
    assert zeros == round(0.6 * total)
    assert report.achieved_sparsity == pytest.approx(zeros / total, abs=1e-12)
    assert report.requested_sparsity == 0.6
    for name, w in dense_before.items():  # first and last untouched
        assert torch.equal(dict(m.named_modules())[name].weight, w)
    # Global: one threshold, so the two pruned layers end up at different sparsities.
    rows = {r.name: r for r in report.layers}
    assert rows["body.3"].sparsity != pytest.approx(rows["head.1"].sparsity, abs=0.01)


def test_layer_scope_prunes_each_layer_at_the_sparsity():
    m = tiny()
    report = prune_(m, PruneConfig(sparsity=0.3, scope="layer", keep_first_last=False), X8)
    assert report.kept_dense == {}
    for row in report.layers:
        assert row.nonzero_before - row.nonzero_after == round(0.3 * row.params_before)
    assert report.achieved_sparsity == pytest.approx(
        0.3, abs=max(1 / r.params_before for r in report.layers)
    )


def test_zeros_are_permanent_and_no_masks_or_hooks_remain():
    m = tiny()
    keys_before = set(m.state_dict())
    prune_(m, PruneConfig(sparsity=0.5), X8)
    assert set(m.state_dict()) == keys_before  # no weight_orig / weight_mask
    for mod in m.modules():
        assert not mod._forward_pre_hooks
        assert not hasattr(mod, "weight_mask")
    # Biases and batch norms are never pruned.
    assert int((m.body[3].bias == 0).sum()) == 0
    assert int((m.body[1].weight == 0).sum()) == 0


def test_pruning_leaves_batch_norm_statistics_and_training_mode_alone():
    m = tiny().train()
    stats = m.body[1].running_mean.clone()
    prune_(m, PruneConfig(method="unstructured"), X8)
    prune_(m, PruneConfig(method="structured", sparsity=0.25), X8)
    assert m.training and m.body[1].training
    assert torch.equal(m.body[1].running_mean, stats)


def test_exclude_a_container_keeps_all_its_layers_dense():
    m = tiny()
    report = prune_(m, PruneConfig(sparsity=0.5, keep_first_last=False, exclude=("head",)), X8)
    assert report.kept_dense == {"head.1": "excluded", "head.3": "excluded"}
    assert weight_stats(m, ["head.1", "head.3"])[1] == 0
    total, zeros = weight_stats(m, ["body.0", "body.3"])
    assert zeros == round(0.5 * total)


def test_unknown_exclude_name_says_what_exists():
    with pytest.raises(WorkbenchError) as err:
        prune_(tiny(), PruneConfig(exclude=("body.30",)), X8)
    msg = str(err.value)
    assert "'body.30'" in msg and "did you mean" in msg and "'body.3'" in msg
    assert "body.0, body.3, head.1, head.3" in msg  # the prunable layers, in forward order


def test_excluding_a_layer_that_holds_nothing_prunable_is_an_error():
    with pytest.raises(
        WorkbenchError, match=r"'body.1' in exclude is a BatchNorm2d and holds no prunable layer"
    ):
        prune_(tiny(), PruneConfig(exclude=("body.1",)), X8)
    prune_(tiny(), PruneConfig(exclude=("body",)), X8)  # a block holding layers is fine


def test_bad_example_input_is_a_workbench_error():
    with pytest.raises(WorkbenchError, match="does not run on example_input"):
        prune_(tiny(), PruneConfig(), torch.zeros(1, 1, 8, 8))
    with pytest.raises(WorkbenchError, match="not a torch.Tensor"):
        prune_(tiny(), PruneConfig(), np.zeros((1, 3, 8, 8)))


def test_nothing_left_to_prune_is_an_error():
    m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.raises(WorkbenchError, match="no layer is left to prune"):
        prune_(m, PruneConfig(), torch.zeros(1, 4))


def test_report_is_json_ready():
    report = prune_(tiny(), PruneConfig(method="structured", sparsity=0.5), X8)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["method"] == "structured"
    assert {"name", "type", "params_before", "params_after", "sparsity", "kept_dense"} <= set(
        d["layers"][0]
    )
    assert d["macs_after"] < d["macs_before"]


# ------------------------------------------------------------------------- structured


def test_structured_removes_channels_and_keeps_the_model_working():
    m = tiny()
    report = prune_(m, PruneConfig(method="structured", sparsity=0.5, scope="layer"), X8)
    rows = {r.name: r for r in report.layers}
    assert rows["body.0"].out_channels_after == 8  # first conv kept
    assert rows["body.3"].out_channels_after == 8  # 16 -> 8
    assert rows["head.1"].out_channels_after == 16  # 32 -> 16
    assert rows["head.3"].out_channels_after == 10  # classes
    assert m.head[1].in_features == 8 * 4 * 4  # the consumer followed the conv
    assert m.body[4].num_features == 8  # and so did the batch norm
    assert m(X8).shape == (2, 10)
    assert report.achieved_sparsity == pytest.approx(0.5)
    assert report.macs_after < report.macs_before


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_structured_never_skips_a_layer_and_macs_fall_with_sparsity(scope):
    # Torch-Pruning's own pruner skips a group that the ratio would empty (16 channels at
    # 0.95 keep int(0.8) = 0), leaving that layer whole: here it keeps one channel.
    ratios = []
    for sparsity in (0.3, 0.6, 0.9, 0.95):
        m = tiny()
        report = prune_(
            m, PruneConfig(method="structured", sparsity=sparsity, scope=scope, round_to=1), X8
        )
        ratios.append(report.macs_ratio)
        assert m(X8).shape == (2, 10)
    assert ratios == sorted(ratios, reverse=True) and len(set(ratios)) == 4
    rows = {r.name: r for r in report.layers}
    assert rows["body.3"].out_channels_after == 1 and rows["head.1"].out_channels_after <= 2


def _export_and_run(m: nn.Module, x: torch.Tensor, path) -> np.ndarray:
    torch.onnx.export(
        m, (x,), str(path), dynamo=False, input_names=["input"], output_names=["logits"]
    )
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()}
    )[0]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("arch", [pytest.param("resnet18", marks=pytest.mark.slow), "mobilenet_v2"])
def test_structured_torchvision_models_stay_runnable_and_exportable(arch, tmp_path):
    import torchvision

    torch.manual_seed(0)
    m = getattr(torchvision.models, arch)(num_classes=10).eval()
    macs0, params0 = tp.utils.count_ops_and_params(m, X32)
    report = prune_(m, PruneConfig(method="structured", sparsity=0.5), X32)
    macs1, params1 = tp.utils.count_ops_and_params(m, X32)
    assert (report.macs_before, report.macs_after) == (macs0, macs1)
    assert macs1 < 0.6 * macs0 and params1 < params0
    first, last = report.layers[0], report.layers[-1]
    assert first.out_channels_after == first.out_channels_before  # stem kept
    assert last.out_channels_after == 10  # classes kept
    assert report.achieved_sparsity == pytest.approx(0.5, abs=0.01)
    coupled = {n for n, why in report.kept_dense.items() if why == "coupled"}
    # Layers whose outputs are tied to the kept stem: ResNet's residual adds in layer1,
    # MobileNetV2's first depthwise conv.
    expected = {
        "resnet18": {"layer1.0.conv2", "layer1.1.conv2"},
        "mobilenet_v2": {"features.1.conv.0.0"},
    }
    assert coupled == expected[arch]
    rows = {r.name: r for r in report.layers}
    assert all(rows[n].out_channels_after == rows[n].out_channels_before for n in coupled)
    with torch.no_grad():
        expected = m(X32).numpy()
    got = _export_and_run(m, X32, tmp_path / f"{arch}.onnx")
    assert got.shape == (1, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_structured_global_at_high_sparsity_wipes_out_no_layer():
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.mobilenet_v2(num_classes=10).eval()
    report = prune_(m, PruneConfig(method="structured", sparsity=0.9), X32)
    assert all(r.out_channels_after >= 1 for r in report.layers)
    # Each layer keeps at least half the average kept fraction: (1 - 0.9) / 2 of its channels.
    for r in report.layers:
        assert r.out_channels_after >= int(r.out_channels_before * 0.05)
    assert m(X32).shape == (1, 10)
    assert report.achieved_sparsity == pytest.approx(0.9, abs=0.01)
    assert any("capped" in note for note in report.notes)  # the cap did bind somewhere


# ----------------------------------------------------------------- MACs-target search


@pytest.mark.slow
def test_search_structured_sparsity_halves_the_macs_of_resnet18():
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.resnet18(num_classes=10).eval()
    state = copy.deepcopy(m.state_dict())
    found = search_structured_sparsity(m, X32, 0.5, tol=0.01)
    assert abs(found.macs_ratio - 0.5) <= 0.01
    assert 0.2 < found.sparsity < 0.5  # in and out channels both shrink: MACs fall faster
    assert all(torch.equal(v, state[k]) for k, v in m.state_dict().items())  # m untouched
    # Independently: prune at that sparsity and count with Torch-Pruning.
    before = tp.utils.count_ops_and_params(m, X32)[0]
    prune_(m, PruneConfig(method="structured", sparsity=found.sparsity), X32)
    after = tp.utils.count_ops_and_params(m, X32)[0]
    assert after / before == pytest.approx(found.macs_ratio)
    assert (found.macs_before, found.macs_after) == (before, after)


def test_structured_sparsity_for_macs_takes_a_factory_and_returns_the_sparsity():
    exact = PruneConfig(method="structured", round_to=1)  # 16-channel layers: no rounding
    sparsity = structured_sparsity_for_macs(tiny, X8, 0.6, 0.02, config=exact)
    m = tiny()
    before = tp.utils.count_ops_and_params(m, X8)[0]
    prune_(m, PruneConfig(method="structured", sparsity=sparsity, round_to=1), X8)
    after = tp.utils.count_ops_and_params(m, X8)[0]
    assert isinstance(sparsity, float)
    assert after / before == pytest.approx(0.6, abs=0.02)


def test_the_macs_search_raises_a_per_layer_cap_to_each_trial_sparsity():
    # A cap below the search's first trial (MAX_SPARSITY) used to make that trial's
    # config invalid; each trial now raises the cap to its sparsity, as a gradual step.
    capped = PruneConfig(method="structured", sparsity=0.0, round_to=1, max_layer_sparsity=0.3)
    found = search_structured_sparsity(tiny, X8, 0.6, tol=0.02, config=capped)
    assert found.macs_ratio == pytest.approx(0.6, abs=0.02)


def test_macs_target_out_of_range_is_an_error():
    with pytest.raises(WorkbenchError, match="target_macs_ratio"):
        structured_sparsity_for_macs(tiny, X8, 1.5)


# ------------------------------------------------------------------ layer sensitivity


def test_layer_sensitivity_prunes_one_layer_at_a_time():
    m = tiny()
    state = copy.deepcopy(m.state_dict())
    calls = []

    def zero_fraction(module: nn.Module) -> float:
        # A stand-in "accuracy" that reveals what was pruned: 1 - fraction of zeroed weights.
        calls.append(module)
        total, zeros = weight_stats(module, FORWARD_ORDER)
        return 1.0 - zeros / total

    rows = layer_sensitivity(m, zero_fraction, sparsity=0.5, example_input=X8)
    assert [r["layer"] for r in rows] == FORWARD_ORDER
    assert len(calls) == len(rows) + 1 and calls[0] is m
    total = weight_stats(m, FORWARD_ORDER)[0]
    for r in rows:
        assert r["baseline_accuracy"] == 1.0
        assert r["drop"] == pytest.approx(round(0.5 * r["params"]) / total)
        assert r["drop"] == pytest.approx(r["baseline_accuracy"] - r["accuracy"])
    for k, v in m.state_dict().items():  # the module itself is never touched
        assert torch.equal(v, state[k])


def test_layer_sensitivity_structured_skips_the_classifier_and_needs_an_input():
    m = tiny()
    with pytest.raises(WorkbenchError, match="example_input"):
        layer_sensitivity(m, lambda _: 1.0, method="structured")
    rows = layer_sensitivity(
        m,
        lambda mod: float(sum(p.numel() for p in mod.parameters())),
        method="structured",
        example_input=X8,
        layers=["body"],
    )
    assert [r["layer"] for r in rows] == ["body.0", "body.3"]
    assert all(r["drop"] > 0 for r in rows)  # parameters really went away


def test_layer_sensitivity_rejects_unknown_layers():
    with pytest.raises(WorkbenchError, match="'head.9'"):
        layer_sensitivity(tiny(), lambda _: 1.0, layers=["head.9"])


def test_structured_rounds_kept_channels_to_simd_friendly_counts():
    """ONNX Runtime's convolutions are much slower on odd channel counts (see round_to)."""
    import torchvision

    m = torchvision.models.resnet18(num_classes=10).eval()
    report = prune_(m, PruneConfig(method="structured", sparsity=0.33), X32)
    counts = [mod.out_channels for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    assert all(c % 8 == 0 for c in counts), counts
    assert report.macs_after < 0.75 * report.macs_before
    exact = torchvision.models.resnet18(num_classes=10).eval()
    prune_(exact, PruneConfig(method="structured", sparsity=0.33, round_to=1), X32)
    assert any(mod.out_channels % 8 for mod in exact.modules() if isinstance(mod, nn.Conv2d))


def test_a_torch_pruning_failure_becomes_one_clear_error(monkeypatch):
    # Torch-Pruning can fail inside on graphs it does not foresee (ShuffleNet's channel
    # shuffle raised ZeroDivisionError): the caller gets a WorkbenchError with a way out.
    import workbench.compress.prune as prune_module

    def broken(*args, **kwargs):
        raise ZeroDivisionError("integer division or modulo by zero")

    monkeypatch.setattr(prune_module, "_prune_structured", broken)
    with pytest.raises(
        WorkbenchError, match=r"structured pruning failed on TinyNet.*ZeroDivisionError"
    ) as exc:
        prune_(tiny(), PruneConfig(method="structured", sparsity=0.5), X8)
    assert "use unstructured pruning" in str(exc.value)


def test_a_layer_emptied_by_a_global_threshold_is_reported():
    m = tiny()
    with torch.no_grad():
        m.body[3].weight.mul_(1e-6)  # far below every other layer's weights
    report = prune_(m, PruneConfig(sparsity=0.5, keep_first_last=False), X8)
    assert not m.body[3].weight.detach().any()
    assert any(n.startswith("1 layer(s) lost every weight (body.3)") for n in report.notes)
    per_layer = prune_(tiny(), PruneConfig(sparsity=0.5, scope="layer"), X8)
    assert not any("lost every weight" in n for n in per_layer.notes)


def test_grouped_convolutions_left_unpruned_are_named_in_one_note():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=4),  # grouped, not depthwise
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    ).eval()
    report = prune_(net, PruneConfig(method="structured", sparsity=0.5), X8)
    notes = [n for n in report.notes if "grouped channels" in n]
    assert len(notes) == 1 and "left unpruned" in notes[0], report.notes
    assert net(X8).shape == (2, 10)


def test_capped_prune_counts_water_fill_past_the_capped_layers():
    from workbench.compress import capped_prune_counts

    quiet = np.full(100, 1e-6)  # one global ranking would take all of it first
    loud = np.linspace(1.0, 2.0, 300)
    counts = capped_prune_counts([quiet, loud], 0.5, 0.8)
    assert counts == [80, 120]  # the quiet layer stops at its cap; the loud one makes up the total
    assert capped_prune_counts([quiet, loud], 0.5, 1.0) == [100, 100]  # no cap in effect
    # Several layers hit the cap in turn; the total is still exact.
    layers = [np.full(10, 1e-6), np.full(20, 1e-5), np.linspace(1, 2, 70)]
    counts = capped_prune_counts(layers, 0.6, 0.7)
    assert counts[:2] == [7, 14] and sum(counts) == 60


def test_max_layer_sparsity_keeps_a_quiet_layer_from_being_emptied():
    def quiet() -> TinyNet:
        m = tiny()
        with torch.no_grad():
            m.body[3].weight.mul_(1e-6)  # a global threshold would take all of it
        return m

    names = [n for n in FORWARD_ORDER]
    m = quiet()
    report = prune_(m, PruneConfig(sparsity=0.5, keep_first_last=False, max_layer_sparsity=0.8), X8)
    rows = {r.name: r for r in report.layers}
    n = rows["body.3"].params_before
    assert rows["body.3"].nonzero_after == n - int(0.8 * n)  # at its cap, not emptied
    assert not any("lost every weight" in note for note in report.notes)
    total, zeros = weight_stats(m, names)
    assert zeros == round(0.5 * total)  # the other layers made up the difference
    assert max(r.sparsity for r in report.layers) <= 0.8 + 1e-9
    assert "-cap0.8" in PruneConfig(sparsity=0.5, max_layer_sparsity=0.8).label()


def test_max_layer_sparsity_caps_structured_channel_removal():
    m = tiny()
    report = prune_(
        m, PruneConfig(method="structured", sparsity=0.5, round_to=1, max_layer_sparsity=0.5), X8
    )
    for row in report.layers:
        removed = row.out_channels_before - row.out_channels_after
        assert removed <= 0.5 * row.out_channels_before, row
    assert m(X8).shape == (2, 10)


def test_batch_norm_scales_pair_each_layer_with_the_norm_it_feeds():
    from workbench.compress import batch_norm_scales

    m = tiny()
    with torch.no_grad():
        m.body[4].running_var.fill_(4.0)
        m.body[4].weight.fill_(-3.0)
    before = m.body[4].running_mean.clone()
    scales = batch_norm_scales(m, FORWARD_ORDER, X8)
    assert set(scales) == {"body.0", "body.3"}  # the linear layers feed no batch norm
    assert torch.allclose(scales["body.3"], torch.full((16,), 3.0 / (4.0 + 1e-5) ** 0.5))
    assert torch.equal(m.body[4].running_mean, before)  # traced in eval mode
    assert not m.training


def test_bn_scaled_importance_keeps_a_layer_whose_norm_scales_it_up():
    def exact() -> TinyNet:
        m = tiny()
        m.body[4].eps = 1e-12  # so the rescaling below leaves the function as it is
        return m

    def rescaled() -> TinyNet:
        # The same function as tiny(): body.3's weights 1000x smaller, its norm 1000x
        # larger. One |w| threshold takes body.3 first; its real share is unchanged.
        m = exact()
        with torch.no_grad():
            m.body[3].weight.mul_(1e-3)
            m.body[3].bias.mul_(1e-3)
            m.body[4].running_mean.mul_(1e-3)
            m.body[4].running_var.mul_(1e-6)
        return m

    reference = exact()
    config = PruneConfig(sparsity=0.5, keep_first_last=False)
    by_magnitude, by_scale = rescaled(), rescaled()
    assert torch.allclose(by_magnitude(X8), reference(X8), atol=1e-3)
    prune_(by_magnitude, config, X8)
    report = prune_(by_scale, replace_importance(config), X8)
    prune_(reference, config, X8)
    rows = {r.name: r for r in report.layers}
    assert (by_magnitude.body[3].weight == 0).all()  # emptied by the raw magnitudes
    # bn-scaled ranks the rescaled net exactly as magnitude ranks the original one.
    for name in FORWARD_ORDER:
        got = dict(by_scale.named_modules())[name].weight != 0
        want = dict(reference.named_modules())[name].weight != 0
        assert torch.equal(got, want), name
    assert rows["body.3"].nonzero_after > 0
    total, zeros = weight_stats(by_scale, FORWARD_ORDER)
    assert zeros == round(0.5 * total)
    # with a per-layer cap, the same ranking decides within the caps
    capped = rescaled()
    prune_(
        capped,
        replace_importance(
            PruneConfig(sparsity=0.5, keep_first_last=False, max_layer_sparsity=0.9)
        ),
        X8,
    )
    assert int((capped.body[3].weight != 0).sum()) == rows["body.3"].nonzero_after


def replace_importance(config: PruneConfig) -> PruneConfig:
    from dataclasses import replace

    return replace(config, importance="bn-scaled")


def test_importance_is_checked_labelled_and_left_out_of_old_recipes():
    from workbench.recipe import GradualPruneConfig

    assert "importance" not in PruneConfig(sparsity=0.5).to_dict()  # old cache keys hold
    config = PruneConfig(sparsity=0.5, importance="bn-scaled")
    assert config.to_dict()["importance"] == "bn-scaled"
    assert config.label().endswith("-bn-scaled")
    assert PruneConfig.from_dict(config.to_dict()) == config
    gradual = GradualPruneConfig(sparsity=0.8, steps=2, importance="bn-scaled")
    assert all(gradual.step_config(s).importance == "bn-scaled" for s in (0.4, 0.8))
    with pytest.raises(WorkbenchError, match="applies to unstructured pruning only"):
        PruneConfig(method="structured", sparsity=0.5, importance="bn-scaled")
    with pytest.raises(WorkbenchError, match="pruning importance"):
        PruneConfig(sparsity=0.5, importance="taylor")


def test_batch_norm_scales_pair_by_the_tensor_not_a_reused_id():
    class Chain(nn.Module):
        # a feeds a ReLU, b (not a target) feeds the norm: a's output is freed before b
        # runs, so b's output may take its id.
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1)
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.a(x)
            x = torch.relu(x)
            x = self.b(x)
            return self.bn(x)

    from workbench.compress import batch_norm_scales

    net = Chain().eval()
    for _ in range(20):  # id reuse depends on the allocator: try it more than once
        assert batch_norm_scales(net, ["a"], X8) == {}
    assert set(batch_norm_scales(net, ["a", "b"], X8)) == {"b"}
