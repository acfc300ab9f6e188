"""The device registry: built-in profiles, ``host``, and a user's own from a TOML file.

``list_devices()`` names them, ``get_device(name)`` returns one (an unknown name is
answered with the known ones), ``load_profiles(path)`` reads a user's ``[[device]]``
tables and registers them. Reading a TOML file never executes anything.
"""

from __future__ import annotations

import fnmatch
from os import PathLike
from pathlib import Path

from workbench.devices.builtin import BUILTIN_DEVICES
from workbench.devices.profile import DeviceProfile
from workbench.errors import WorkbenchError

try:  # Python 3.11+; on 3.10 the same parser is the tomli package
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["get_device", "list_devices", "load_profiles", "read_toml", "register_device"]

HOST = "host"
_BUILTIN: dict[str, DeviceProfile] = {p.name: p for p in BUILTIN_DEVICES}
_USER: dict[str, DeviceProfile] = {}


def list_devices(pattern: str = "*") -> list[str]:
    """Names of every known device matching the glob ``pattern``: host, built-ins, the user's."""
    names = [HOST, *sorted(_BUILTIN), *sorted(_USER)]
    return [n for n in names if fnmatch.fnmatch(n, pattern)]


def get_device(name: str | DeviceProfile) -> DeviceProfile:
    """The profile called ``name`` (a profile passes through).

    ``host`` is detected and micro-benchmarked on first use (about a second).

    Raises:
        WorkbenchError: no device has that name; the message lists the known ones.
    """
    if isinstance(name, DeviceProfile):
        return name
    if name == HOST:
        from workbench.devices.host import host_profile

        return host_profile()
    profile = _USER.get(name) or _BUILTIN.get(name)
    if profile is None:
        raise WorkbenchError(
            f"unknown device {name!r}",
            f"use one of: {', '.join(list_devices())}, or describe it in a profile file "
            "([[device]] tables, loaded with --devices-file FILE or load_profiles)",
        )
    return profile


def register_device(profile: DeviceProfile, *, replace: bool = False) -> DeviceProfile:
    """Add a user's profile to the registry; built-in names and ``host`` cannot be reused."""
    if profile.name == HOST or profile.name in _BUILTIN:
        raise WorkbenchError(
            f"device name {profile.name!r} is a built-in device", "give your profile another name"
        )
    if profile.name in _USER and not replace and _USER[profile.name] != profile:
        raise WorkbenchError(
            f"device {profile.name!r} is already registered with other figures",
            "give the profile another name",
        )
    _USER[profile.name] = profile
    return profile


def read_toml(path: str | PathLike) -> dict:
    """A TOML file as a dict; a missing or malformed file is one clear error."""
    p = Path(path)
    if not p.is_file():
        raise WorkbenchError(f"{p} is not a file", "give the path of a TOML file")
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise WorkbenchError(f"{p} is not valid TOML ({e})", "fix the file's syntax") from None
    except (OSError, UnicodeDecodeError) as e:
        raise WorkbenchError(
            f"cannot read {p} ({e})", "check the file and its permissions"
        ) from None


def profiles_from_toml(data: dict, origin: str = "the profile file") -> list[DeviceProfile]:
    """The ``[[device]]`` tables of parsed TOML as profiles (not registered)."""
    tables = data.get("device", [])
    if isinstance(tables, dict):
        tables = [tables]
    if not isinstance(tables, list):
        raise WorkbenchError(f"{origin}: 'device' must be [[device]] tables", "see docs/devices.md")
    profiles = []
    for table in tables:
        try:
            profiles.append(DeviceProfile.from_dict(dict(table)))
        except WorkbenchError as e:
            raise WorkbenchError(f"{origin}: {e.problem}", e.fix) from None
    return profiles


def load_profiles(path: str | PathLike, *, register: bool = True) -> list[DeviceProfile]:
    """Read a user's device profiles from the ``[[device]]`` tables of a TOML file.

    Every figure is checked: a missing or negative one is named with its device.

    Args:
        register: also add them to the registry, so ``get_device`` finds them.
    """
    profiles = profiles_from_toml(read_toml(path), str(path))
    if not profiles:
        raise WorkbenchError(f"{path} has no [[device]] tables", "describe at least one device")
    if register:
        for p in profiles:
            register_device(p, replace=True)
    return profiles
