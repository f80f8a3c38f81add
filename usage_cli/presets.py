"""The presets of ``usage train-cls`` (per backbone family) and ``usage refine-psa``: values for the
options left unset.

Kept apart from the stage (no torch import) because ``--help`` shows them: :func:`preset_help`
writes each option's preset values into its help text, so the two never disagree.
"""

from __future__ import annotations

from typing import Any

# values the paper gives per backbone family (sec. 5.1) and the anchors' training recipes; the
# paper starts both families from ImageNet weights
TRAIN_CLS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "transformer": {
            "mapping": "cm", "reg": "aa", "tau1": 1.0, "tau2": 0.1, "lam": 0.25, "ema": 0.99,
            "teacher_drop_path": 0.05, "student_drop_path": (0.05, 0.15), "student_dropout": (0.0, 0.01),
            "optimizer": "adamw", "lr": None, "weight_decay": 0.05, "schedule": "cosine", "warmup_epochs": 5.0,
            "batch_size": 64, "img_size": 224, "epochs": 60, "aug": "deit", "pretrained": True,
        },
        "cnn": {
            "mapping": "cm", "reg": "aa", "tau1": 50.0, "tau2": 0.1, "lam": 0.25, "ema": 0.99,
            "teacher_drop_path": 0.05, "student_drop_path": (0.05, 0.15), "student_dropout": (0.0, 0.01),
            "optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "schedule": "poly", "warmup_epochs": 0.0,
            "batch_size": 16, "img_size": 448, "epochs": 15, "aug": "psa", "pretrained": True,
        },
    },
}  # fmt: skip

# refine-psa: confident-label and random-walk settings of PSA and of MCTformer (what USAGE used), tuned
# on VOC's seeds, and `auto`, whose cuts come from the seeds' own background threshold t (gen-seeds
# --bg-threshold, chosen without ground truth): confident foreground above AUTO_CUTS["fg"] x t,
# confident background below AUTO_CUTS["bg"] x t (as PSA background powers, so the CRF step is PSA's),
# the walk's constant background at t. All start AffinityNet from ImageNet weights.
REFINE_PSA: dict[str, dict[str, Any]] = {
    "auto": {"crf_la": None, "crf_ha": None, "beta": 8.0, "logt": 6, "bg_mode": "const", "bg_power": 16.0, "bg_const": None, "walk_norm": "none", "pretrained": True},
    "psa": {"crf_la": 4.0, "crf_ha": 32.0, "beta": 8.0, "logt": 8, "bg_mode": "power", "bg_power": 16.0, "bg_const": 0.39, "walk_norm": "none", "pretrained": True},
    "mctformer": {"crf_la": 1.0, "crf_ha": 12.0, "beta": 8.0, "logt": 6, "bg_mode": "const", "bg_power": 16.0, "bg_const": 0.39, "walk_norm": "none", "pretrained": True},
}
DEFAULT_REFINE_PRESET = "auto"
# the auto preset's confident-label cuts as multiples of the seeds' threshold (chosen by bench/chain.py on
# the synthetic set, docs/results.md)
AUTO_CUTS = {"fg": 1.0, "bg": 0.4}

# how train-cls and refine-psa fill a preset value of None
RULES = {
    "lr": "5e-4 x batch/512",
    "crf_la": f"cut at {AUTO_CUTS['fg']:g}x the seeds' threshold",
    "crf_ha": f"cut at {AUTO_CUTS['bg']:g}x the seeds' threshold",
    "bg_const": "the seeds' threshold",
}


def deit_lr(batch_size: int, world_size: int = 1) -> float:
    """The learning rate of DeiT / MCTformer (``RULES["lr"]``): 5e-4 x the global batch / 512, where
    ``batch_size`` is per process; train-cls uses it where the preset's ``lr`` is None."""
    return 5e-4 * batch_size * world_size / 512
FAMILIES = {"transformer": "transformers", "cnn": "CNNs"}


def _fmt(key: str, v: Any) -> str:
    if v is None:
        return RULES[key]
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, tuple):
        return ":".join(f"{x:g}" for x in v)
    return f"{v:g}" if isinstance(v, float) else str(v)


def preset_help(key: str, text: str = "", presets: dict[str, dict[str, Any]] = TRAIN_CLS) -> str:
    """``text`` followed by the preset values of option ``key``, e.g. "(paper preset: 60 transformers,
    15 CNNs)" for train-cls (``presets`` per backbone family) or "(psa and mctformer presets: on)"."""
    shown = {}
    for name, preset in presets.items():
        if key in preset:  # one value per preset (refine-psa)
            shown[name] = _fmt(key, preset[key])
        else:  # one value per backbone family (train-cls)
            values = {fam: _fmt(key, v[key]) for fam, v in preset.items()}
            one = len(set(values.values())) == 1
            shown[name] = next(iter(values.values())) if one else ", ".join(f"{v} {FAMILIES[f]}" for f, v in values.items())
    if len(shown) > 1 and len(set(shown.values())) == 1:
        parts = [f"{' and '.join(shown)} presets: {next(iter(shown.values()))}"]
    else:
        parts = [f"{name} preset: {v}" for name, v in shown.items()]
    return f"{text} ({'; '.join(parts)})".strip()


def refine_psa_preset_help() -> str:
    """The refine-psa presets in one line, for ``--preset``."""

    def one(name: str, p: dict[str, Any]) -> str:
        if p["crf_la"] is None:  # auto
            return (f"{name} (the default: confident labels cut at {AUTO_CUTS['fg']:g}x / {AUTO_CUTS['bg']:g}x the seeds' own "
                    f"threshold, logt {p['logt']}, bg = that threshold; no ground truth)")  # fmt: skip
        bg = f"bg (1-max)^{p['bg_power']:g}" if p["bg_mode"] == "power" else f"bg {p['bg_const']:g}"
        return f"{name} (la {p['crf_la']:g}/ha {p['crf_ha']:g}, logt {p['logt']}, {bg}; tuned on VOC)"

    return " or ".join(one(name, p) for name, p in REFINE_PSA.items()) + "."
