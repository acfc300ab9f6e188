"""torchvision's classification architectures, with pretrained weights only from disk.

Nothing here downloads: pretrained weights are used only when the checkpoint file
torchvision would have downloaded is already in ``torch.hub.get_dir()/checkpoints``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlparse

import torch

from workbench.errors import WorkbenchError
from workbench.models._safety import code_pickle_error
from workbench.models.model import RANDOM_INIT_SEED, Model, weights_fingerprint

__all__ = [
    "DEFAULT_INPUT_SHAPE",
    "PREFIX",
    "build_random",
    "checkpoint_path",
    "default_input_shape",
    "load_torchvision",
    "torchvision_archs",
]

PREFIX = "torchvision:"
DEFAULT_INPUT_SHAPE = (1, 3, 224, 224)

# The weights loader is swapped process-wide while a builder runs; one at a time.
_BUILD_LOCK = threading.Lock()


def torchvision_archs() -> list[str]:
    """torchvision's classification architecture names (no detection/segmentation)."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def _weights_enum(arch: str) -> Any | None:
    import torchvision

    try:
        return torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None  # an architecture without published weights


def default_input_shape(arch: str) -> tuple[int, ...]:
    """(1, 3, S, S) with S the crop size of the arch's default weights' transforms."""
    weights = _weights_enum(arch)
    if weights is not None:
        try:
            crop = weights.transforms().crop_size
            return (1, 3, int(crop[0]), int(crop[-1]))
        except (AttributeError, TypeError, IndexError):
            pass
    return DEFAULT_INPUT_SHAPE


def checkpoint_path(arch: str) -> Path:
    """Where torchvision keeps the default weights of ``arch`` once downloaded."""
    weights = _weights_enum(arch)
    if weights is None:
        raise WorkbenchError(
            f"torchvision publishes no pretrained weights for {arch}",
            "pass pretrained=False (CLI: --random-init) for a randomly initialised model",
        )
    filename = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _check_arch(arch: str) -> None:
    archs = torchvision_archs()
    if arch not in archs:
        import difflib

        close = difflib.get_close_matches(arch, archs, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(PREFIX + c for c in close)}? " if close else ""
        raise WorkbenchError(
            f"unknown torchvision architecture {arch!r}",
            f"{hint}run `workbench models 'torchvision:*'` to list the {len(archs)} "
            "classification architectures",
        )


def build_random(arch: str) -> torch.nn.Module:
    """``arch`` with torchvision's initialisation, seeded with RANDOM_INIT_SEED."""
    import torchvision

    _check_arch(arch)
    # fork_rng: seeding must not disturb the caller's random stream.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. googlenet's init_weights FutureWarning
        torch.manual_seed(RANDOM_INIT_SEED)
        module = torchvision.models.get_model(arch, weights=None)
    return module.float().eval()


@contextlib.contextmanager
def _weights_from_file(path: Path) -> Iterator[list[str]]:
    """Make torchvision's weights API read ``path`` (weights-only) instead of downloading.

    torchvision's builders do more than load_state_dict (densenet renames legacy
    keys, inception/googlenet switch on transform_input and drop the aux heads), so
    the builder is run as is and only its loader is replaced. Both names it could
    use are replaced, so no code path can reach the network or a full unpickle.
    """
    import torchvision.models._api as api

    calls: list[str] = []

    def load_local(url: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if os.path.basename(urlparse(url).path) != path.name:
            raise RuntimeError(f"torchvision asked for {url}, expected {path.name}")
        calls.append(url)
        return torch.load(path, map_location="cpu", weights_only=True)

    with (
        _BUILD_LOCK,
        mock.patch.object(api, "load_state_dict_from_url", load_local),
        mock.patch.object(torch.hub, "load_state_dict_from_url", load_local),
    ):
        yield calls


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _transforms_info(weights: Any) -> dict:
    try:
        t = weights.transforms()
    except Exception:  # a weights entry without transforms: nothing to record
        return {}
    info = {}
    for key in ("crop_size", "resize_size", "mean", "std"):
        value = getattr(t, key, None)
        if value is not None:
            info[key] = list(value)
    interpolation = getattr(t, "interpolation", None)
    if interpolation is not None:
        info["interpolation"] = getattr(interpolation, "value", str(interpolation))
    return info


def _build_pretrained(arch: str) -> tuple[torch.nn.Module, Any, Path]:
    import torchvision

    weights = _weights_enum(arch)
    path = checkpoint_path(arch)
    if not path.is_file():
        raise WorkbenchError(
            f"the pretrained weights for {arch} are not on this machine: expected {path}",
            "download them once where there is internet, e.g. "
            f"python -c \"import torchvision; torchvision.models.get_model('{arch}', "
            f"weights='DEFAULT')\", and copy {path.name} into {path.parent}; or pass "
            "pretrained=False (CLI: --random-init) for random initialisation, which is "
            "fine for size and latency studies",
        )
    try:
        with _weights_from_file(path) as calls, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torchvision.models.get_model(arch, weights=weights)
    except pickle.UnpicklingError:
        raise code_pickle_error(f"checkpoint {path}", []) from None
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise WorkbenchError(
            f"the checkpoint {path} does not hold {arch}'s weights or is damaged ({first})",
            f"delete {path} and download it again with "
            f"torchvision.models.get_model('{arch}', weights='DEFAULT')",
        ) from None
    if not calls:  # torchvision changed how it loads weights: refuse rather than guess
        raise WorkbenchError(
            f"torchvision {torchvision.__version__} built {arch} without reading {path}",
            "report this; meanwhile pass pretrained=False (CLI: --random-init)",
        )
    return module.float().eval(), weights, path


def load_torchvision(arch: str, *, pretrained: bool, input_shape: tuple[int, ...] | None) -> Model:
    """``torchvision:<arch>``, pretrained from the local checkpoint or randomly initialised."""
    _check_arch(arch)
    shape = input_shape or default_input_shape(arch)
    weights = _weights_enum(arch)
    meta: dict[str, Any] = {"arch": arch}
    class_names = None
    if pretrained:
        module, weights, path = _build_pretrained(arch)
        sha = _file_sha256(path)
        expected = torch.hub.HASH_REGEX.search(path.name)
        meta.update(
            init="pretrained",
            checkpoint=str(path),
            checkpoint_sha256=sha,
            # torchvision's file names carry a sha256 prefix of the official file.
            checkpoint_is_official=bool(expected and sha.startswith(expected.group(1))),
        )
        class_names = tuple(str(c) for c in weights.meta.get("categories", ())) or None
    else:
        module = build_random(arch)
        meta["init"] = f"random (torch.manual_seed({RANDOM_INIT_SEED}))"
    if weights is not None:
        meta.update(
            weights=str(weights),
            url=weights.url,
            transforms=_transforms_info(weights),
            reported_metrics=weights.meta.get("_metrics", {}),
        )
    return Model(
        name=PREFIX + arch,
        source="torchvision",
        module=module,
        input_shape=tuple(shape),
        class_names=class_names,
        fingerprint=weights_fingerprint(module),
        meta=meta,
    )
