"""DeviceProfile validation and round trip, the registry, built-ins, user TOML profiles, host."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from workbench.devices import DeviceProfile, get_device, list_devices, load_profiles
from workbench.devices.builtin import BUILTIN_DEVICES
from workbench.devices.profile import BUDGET_FRACTION_DEFAULT
from workbench.errors import WorkbenchError

BUILTIN_NAMES = [p.name for p in BUILTIN_DEVICES]


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_every_builtin_round_trips_and_cites_its_source(name):
    p = get_device(name)
    assert DeviceProfile.from_dict(p.to_dict()) == p
    assert p.source and p.notes
    # Every figure that is a class estimate is named, so a reader can tell them apart.
    assert set(p.estimated) <= {f.name for f in dataclasses.fields(p)}
    assert p.memory_budget_fraction == BUDGET_FRACTION_DEFAULT


def test_the_issue_s_devices_are_all_there():
    names = list_devices()
    assert names[0] == "host"
    for n in (
        "raspberry-pi-4",
        "raspberry-pi-zero-2w",
        "android-midrange",
        "cortex-m7",
        "cortex-m4",
        "esp32-s3",
    ):
        assert n in names
    assert get_device("cortex-m4").ram_bytes == 256 * 1024
    assert get_device("cortex-m4").storage_bytes == 1024 * 1024
    assert get_device("cortex-m7").ram_bytes == 1024 * 1024
    assert get_device("raspberry-pi-zero-2w").ram_bytes == 512 * 1024 * 1024
    assert list_devices("cortex-*") == ["cortex-m4", "cortex-m7"]


def test_budget_is_the_fraction_of_available_memory(board):
    p = board(ram_bytes=1000, available_memory_bytes=800, memory_budget_fraction=0.5)
    assert p.budget_bytes == 400
    assert board(ram_bytes=1000, memory_budget_fraction=0.7).budget_bytes == 700


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"memory_budget_fraction": 0.8}, "memory_budget_fraction"),
        ({"memory_budget_fraction": 0.4}, "memory_budget_fraction"),
        ({"ram_bytes": -1}, "ram_bytes"),
        ({"storage_bytes": 0}, "storage_bytes"),
        ({"cores": 1.5}, "cores"),
        ({"memory_bandwidth_gbps": -2.0}, "memory_bandwidth_gbps"),
        ({"peak_int8_gmacs": None, "peak_fp32_gmacs": None}, "peak_int8_gmacs"),
        ({"peak_fp32_gmacs": float("nan")}, "peak_fp32_gmacs"),
        ({"kind": "toaster"}, "kind"),
        ({"runtimes": ()}, "runtimes"),
        ({"runtimes": "onnxruntime"}, "runtimes"),
        ({"available_memory_bytes": 10 * 2**30}, "available_memory_bytes"),
        ({"estimated": ("speed",)}, "estimated"),
        ({"kind": "microcontroller"}, "runtimes"),  # the Pi's runtimes include onnxruntime
    ],
)
def test_a_bad_figure_is_named_with_the_fix(board, changes, field):
    with pytest.raises(WorkbenchError) as e:
        board(**changes)
    assert field in str(e.value)
    assert e.value.fix


def test_unknown_device_lists_the_known_ones():
    with pytest.raises(WorkbenchError) as e:
        get_device("raspberry-pi-9")
    assert "raspberry-pi-9" in e.value.problem
    assert "raspberry-pi-4" in e.value.fix and "cortex-m4" in e.value.fix and "host" in e.value.fix


_TOML = """
[[device]]
name = "my-jetson"
kind = "linux-board"
cpu = "6x Cortex-A78AE"
cpu_features = ["neon", "dotprod"]
cores = 6
clock_mhz = 1500
ram_bytes = 8_000_000_000
storage_bytes = 64_000_000_000
memory_bandwidth_gbps = 60
peak_int8_gmacs = 300
runtimes = ["onnxruntime", "litert"]
memory_budget_fraction = 0.5
"""


def test_user_profiles_load_from_toml_and_register(tmp_path):
    f = tmp_path / "devices.toml"
    f.write_text(_TOML)
    (p,) = load_profiles(f)
    assert p.name == "my-jetson" and p.runtimes == ("onnxruntime", "litert")
    assert p.peak_fp32_gmacs is None and p.budget_bytes == 4_000_000_000
    assert get_device("my-jetson") == p
    assert "my-jetson" in list_devices()


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda t: t.replace("ram_bytes = 8_000_000_000\n", ""), "ram_bytes"),
        (
            lambda t: t.replace("storage_bytes = 64_000_000_000", "storage_bytes = -5"),
            "storage_bytes",
        ),
        (
            lambda t: t.replace("memory_bandwidth_gbps = 60", "memory_bandwidth_gbps = -60"),
            "memory_bandwidth_gbps",
        ),
        (lambda t: t.replace("clock_mhz = 1500", "clock_ghz = 1.5"), "clock_mhz"),
        (lambda t: t + 'speed = "fast"\n', "speed"),
    ],
)
def test_a_profile_file_with_a_missing_or_negative_figure_names_the_field(tmp_path, edit, field):
    f = tmp_path / "devices.toml"
    f.write_text(edit(_TOML))
    with pytest.raises(WorkbenchError) as e:
        load_profiles(f)
    assert field in str(e.value) and "my-jetson" in str(e.value)


def test_a_malformed_or_missing_profile_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[device]\nname=")
    with pytest.raises(WorkbenchError, match="not valid TOML"):
        load_profiles(bad)
    with pytest.raises(WorkbenchError, match="not a file"):
        load_profiles(tmp_path / "absent.toml")


def test_a_user_profile_cannot_take_a_builtin_name(tmp_path):
    f = tmp_path / "devices.toml"
    f.write_text(_TOML.replace("my-jetson", "cortex-m4"))
    with pytest.raises(WorkbenchError, match="built-in"):
        load_profiles(f)


def test_host_is_detected_and_its_rates_measured():
    import psutil

    from workbench.devices.host import host_benchmark
    from workbench.measure.environment import cpu_features

    p = get_device("host")
    assert p.kind == "host" and p.runtimes == ("onnxruntime",)
    assert p.cores == len(os.sched_getaffinity(0))
    assert p.ram_bytes == psutil.virtual_memory().total
    assert set(p.cpu_features) == set(cpu_features())
    bench = host_benchmark()
    assert (
        bench.memory_bandwidth_gbps > 0.1
        and bench.peak_fp32_gmacs > 0.1
        and bench.peak_int8_gmacs > 0.1
    )
    assert p.memory_bandwidth_gbps == round(bench.memory_bandwidth_gbps, 2)
    assert get_device("host") is p  # measured once per process
    assert DeviceProfile.from_dict(p.to_dict()) == p


def test_cli_devices_lists_budgets_and_says_what_is_estimated(capsys, tmp_path):
    from workbench.cli import main

    assert main(["devices", "cortex-*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["cortex-m4", "cortex-m7"]
    assert "budget 157 kB (60% of 262 kB)" in out[0] and "class estimates" in out[0]
    f = tmp_path / "devices.toml"
    f.write_text(_TOML)
    assert main(["devices", "my-jetson", "--devices-file", str(f), "--json"]) == 0
    (d,) = json.loads(capsys.readouterr().out)
    assert d["name"] == "my-jetson" and d["memory_budget_fraction"] == 0.5
    f.write_text(_TOML.replace("cores = 6", "cores = -6"))
    assert main(["devices", "--devices-file", str(f)]) == 2
    assert "cores" in capsys.readouterr().err
