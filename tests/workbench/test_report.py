"""The HTML report: self-contained, holding the charts' specs and every variant."""

from __future__ import annotations

import html
import json
import re

import pytest

from workbench import Cache, MeasureSettings, PruneConfig, QuantizeConfig, Recipe, load_model, sweep
from workbench.errors import WorkbenchError
from workbench.formatting import format_speedup
from workbench.report import write_report
from workbench.study import Study

# Quick but real measurements; the widget tests use the same settings and cache folder,
# so a variant measured by one test module is a cache hit for the others.
FAST = MeasureSettings(warmup=3, min_runs=30, min_seconds=0.05)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    cache = Cache(tmp_path_factory.getbasetemp() / "digits-cnn-cache")
    recipes = [
        Recipe(),
        Recipe.of(PruneConfig(method="unstructured", sparsity=0.5)),
        Recipe.of(quantize=QuantizeConfig(scheme="int8")),
    ]
    return sweep(load_model("digits-cnn"), recipes, settings=FAST, cache=cache, progress=False)


def embedded_specs(text: str) -> dict[str, dict]:
    """The Vega-Lite specs passed to vegaEmbed, by target element id."""
    decoder = json.JSONDecoder()
    specs = {}
    for match in re.finditer(r'vegaEmbed\("#([\w-]+)", ', text):
        spec, _end = decoder.raw_decode(text, match.end())
        specs[match.group(1)] = spec
    return specs


@pytest.mark.slow
def test_report_is_self_contained_with_charts_and_every_variant(study, tmp_path):
    path = write_report(study, tmp_path / "out" / "report.html")
    assert path == tmp_path / "out" / "report.html"
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temp file left
    text = path.read_text(encoding="utf-8")

    # Offline: no script is fetched, the libraries are inlined.
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.I)
    assert not re.search(r"<link[^>]*href\s*=\s*[\"']https?:", text, re.I)
    assert "window.vegaEmbed=" in text and len(text) > 500_000
    # vega-embed's menu without "Open in Vega Editor", which posts the spec to a public site.
    assert '"editor": false' in text.split("const opts = ", 1)[1].split(";", 1)[0]

    specs = embedded_specs(text)
    xs = [specs[f"tradeoff-{i}"]["layer"][1]["encoding"]["x"]["field"] for i in range(3)]
    assert xs == ["latency_p50_ms", "size_bytes", "compressed_bytes"]
    for i in range(3):
        spec = specs[f"tradeoff-{i}"]
        assert spec["layer"][0]["mark"]["type"] == "line"  # the frontier
        rows = spec["datasets"][spec["data"]["name"]]
        assert {r["recipe"] for r in rows} == {r.recipe.name for r in study.results}
        assert "tooltip" in spec["layer"][1]["encoding"]
    assert "operators" in specs  # where the baseline spends its time

    # The table: every variant, its warnings, and the context of the numbers.
    for result in study.results:
        assert f'data-key="{result.key}"' in text
        assert html.escape(result.recipe.name) in text
        for warning in result.warnings:
            assert html.escape(warning) in text
    assert any(r.warnings for r in study.results)  # unstructured pruning always warns
    # The speed-ups timed interleaved, with their spread, written as the card and CLI do.
    speedups = [c for r in study.results for c in r.metrics.comparisons]
    assert speedups  # every variant is timed against the baseline
    for c in speedups:
        assert f"<li>speed: {html.escape(format_speedup(c))}</li>" in text
    assert f"over {speedups[0].rounds} rounds), timed interleaved in one run" in text
    env = study.baseline.metrics.environment
    assert html.escape(env["cpu_model"]) in text
    assert env["onnxruntime"] in text
    assert study.model_info["fingerprint"] in text


@pytest.mark.slow
def test_report_marks_the_frontier(study, tmp_path):
    text = write_report(study, tmp_path / "r.html").read_text(encoding="utf-8")
    frontier = {
        r.key
        for r in study.frontier({"accuracy": "max", "latency_p50_ms": "min", "size_bytes": "min"})
    }
    assert frontier
    for result in study.results:
        row = re.search(rf'<tr class="([^"]*)" data-key="{result.key}"', text)
        assert ("frontier" in row.group(1)) == (result.key in frontier)


def test_report_refuses_an_empty_study_and_a_folder(tmp_path):
    with pytest.raises(WorkbenchError, match="no variants"):
        write_report(Study("m"), tmp_path / "r.html")
    assert not list(tmp_path.iterdir())
    with pytest.raises(WorkbenchError, match="is a folder"):
        write_report(Study("m"), tmp_path)


def _edited(study: Study, edit) -> object:
    d = json.loads(json.dumps(study.to_dict()))
    return edit(d)


def _set_accuracy(d: dict, value) -> dict:
    d["results"][1]["metrics"]["accuracy"] = value
    return d


def _set_p50(d: dict, value) -> dict:
    d["results"][0]["metrics"]["latency"]["p50"] = value
    return d


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: [d], "not list"),
        (lambda d: None, "not null"),
        (lambda d: 3, "not int"),
        (lambda d: _set_accuracy(d, "high"), "accuracy is 'high', not a number"),
        (lambda d: _set_p50(d, None), "latency.p50 is None, not a number"),
        (lambda d: {**d, "results": {}}, "results are not a list"),
        (lambda d: {**d, "results": [1]}, "not a valid study"),
    ],
)
def test_report_on_a_broken_study_is_one_line_and_exit_2(study, tmp_path, capsys, edit, message):
    from workbench.cli import main

    path = tmp_path / "study.json"
    path.write_text(json.dumps(_edited(study, edit)))
    with pytest.raises(WorkbenchError, match=re.escape(message)):
        Study.load(path)
    code = main(["report", str(path), "-o", str(tmp_path / "r.html")])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert str(path) in err and message in err
    assert not (tmp_path / "r.html").exists()


def test_report_lists_the_variants_that_failed(study, tmp_path):
    failed = Study(study.model, list(study.results), study.model_info)
    failed.add_failure(
        Recipe.of(PruneConfig(method="structured", sparsity=0.5)), RuntimeError("no <graph>")
    )
    text = write_report(failed, tmp_path / "r.html").read_text()
    assert "Variants that failed" in text
    assert "prune-structured-0.5</b>: RuntimeError: no &lt;graph&gt;" in text
    assert "Variants that failed" not in write_report(study, tmp_path / "ok.html").read_text()


@pytest.mark.slow
def test_a_report_tells_runtimes_apart_and_can_take_a_frontier_each(
    tmp_path_factory, tmp_path, fake_runtimes
):
    twin = fake_runtimes[0]  # ONNX Runtime under another name (tests/conftest.py)
    cache = Cache(tmp_path_factory.getbasetemp() / "digits-cnn-cache")
    study = sweep(
        load_model("digits-cnn"),
        [Recipe(), Recipe.of(quantize=QuantizeConfig(scheme="int8"))],
        settings=FAST,
        cache=cache,
        progress=False,
        runtimes=["onnxruntime", twin],
    )
    text = write_report(study, tmp_path / "r.html", per_runtime=True).read_text(encoding="utf-8")
    assert f"in onnxruntime and {twin}, batch 1" in text
    assert "different runtimes were timed in separate runs" in text
    assert '<th class="text">runtime</th>' in text
    for result in study.results:
        row = re.search(rf'data-key="{result.key}">.*?</tr>', text).group(0)
        assert f'<td class="text">{result.runtime}</td>' in row
    # Each runtime's frontier is marked in the table: both runtimes have starred rows.
    front = study.frontier({"accuracy": "max", "latency_p50_ms": "min", "size_bytes": "min"},
                           per_runtime=True)  # fmt: skip
    assert {r.runtime for r in front} == {"onnxruntime", twin}
    for result in study.results:
        row = re.search(rf'<tr class="([^"]*)" data-key="{result.key}"', text)
        assert ("frontier" in row.group(1)) == (result in front)
    assert "within each runtime" in text
    spec = embedded_specs(text)["tradeoff-0"]
    assert spec["layer"][1]["encoding"]["shape"]["field"] == "runtime"
    assert spec["layer"][0]["encoding"]["detail"]["field"] == "runtime"


def test_a_report_says_which_variants_fit_each_device(study, tmp_path, capsys):
    from workbench.cli import main

    path = tmp_path / "study.json"
    study.save(path)
    out = tmp_path / "r.html"
    code = main(["report", str(path), "-o", str(out), "--device", "host,cortex-m4"])
    assert code == 0, capsys.readouterr().err
    text = html.unescape(out.read_text())
    host = text.split("<h2>On host</h2>", 1)[1].split("<h2>", 1)[0]
    m4 = text.split("<h2>On cortex-m4</h2>", 1)[1].split("<h2>", 1)[0]
    n = len(study.results)
    assert f"{n} of {n} variants fit host's" in host and host.count("fits host: ") == n
    assert "latency there" not in host  # this machine's latency is in the table above
    assert f"0 of {n} variants fit cortex-m4's" in m4 and m4.count("does not fit cortex-m4") == n
    assert m4.count("estimate") >= n  # never this machine's time passed off as the device's
    # An unknown device: one line, exit 2, no report.
    bad = tmp_path / "bad.html"
    assert main(["report", str(path), "-o", str(bad), "--device", "toaster"]) == 2
    assert "unknown device 'toaster'" in capsys.readouterr().err and not bad.exists()
