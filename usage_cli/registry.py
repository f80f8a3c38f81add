"""Every command, declared once: its name, where its code lives, the run-time options it takes and
what its ``--out`` holds.

The rest follows from this table: the CLI's commands (``commands/__init__.py``), the run-time flags of
each (``runtime.OPTIONS``), the "run this first" hints of a missing input (:func:`producer`), what
proves an unfinished run in a folder (``artifacts/claims.py``, by the kind it writes), which folders
train-aff and train-seg accept (:func:`writing`), what the report recognises in a RUN_DIR and how it
labels it (``report/inputs.py``) and which settings its provenance table shows first, the layout
test's list of configs and ``docs/gen_cli.sh``'s list of commands. Adding a stage is one line here
plus its own files (``stages/<module>.py`` or ``chains/<module>.py`` and ``commands/<module>.py``).

Torch-free and importing nothing of the package, so that every layer may read it.
"""

from __future__ import annotations

from dataclasses import dataclass

# what a command's --out holds (the artifact kind); the groups below say how each kind is written
TRAINED = ("classifier", "affinity", "segnet")  # by the training loop: an unfinished run is its last.pt
SEEDS = "seeds"  # a seed store (seeds.h5); an unfinished run is its partial store
LABEL_FOLDERS = ("confident", "masks", "preds")  # label-PNG folders: an unfinished run is its resume marker
KINDS = ("dataset", *TRAINED, SEEDS, *LABEL_FOLDERS, "metrics", "report")

ALL = "all"  # takes every run-time option (``runtime.FIELDS``)


@dataclass(frozen=True)
class Stage:
    name: str  # the command (``usage <name>``) and the ``stage`` its manifests record
    writes: str  # the kind of artifact in its --out (:data:`KINDS`)
    runtime: tuple[str, ...] | str | None  # run-time options it takes, in flag order; ALL; None: no run-time block
    shown: tuple[str, ...] = ()  # the config keys the report's provenance table shows first
    chain: bool = False  # runs several stages (chains/<module>.py) rather than one (stages/<module>.py)

    @property
    def module(self) -> str:
        """Its module under ``commands/`` and ``stages/`` (or ``chains/``)."""
        return self.name.replace("-", "_")

    @property
    def package(self) -> str:
        return "chains" if self.chain else "stages"


# in pipeline order: the order of ``usage --help`` and docs/cli.md
STAGES: tuple[Stage, ...] = (
    Stage("synth", "dataset", ("seed", "force")),
    Stage("train-cls", "classifier", ALL, ("backbone", "mapping", "reg", "epochs")),
    Stage("gen-seeds", SEEDS, ("device", "amp", "timeout", "workers", "force", "quiet", "out_in_root"),
          ("ckpt", "source", "refine", "normalise", "scales", "flip", "bg_threshold")),
    Stage("refine-psa", "masks", ALL, ("seeds", "preset", "crf_la", "crf_ha", "bg_mode", "bg_const", "bg_power", "walk", "affinity"), chain=True),
    Stage("psa-labels", "confident", ("timeout", "workers", "force", "quiet", "out_in_root"), ("seeds", "preset", "crf_la", "crf_ha", "crf")),
    Stage("train-aff", "affinity", ALL, ("backbone", "labels", "radius", "epochs")),
    Stage("psa-walk", "masks", ("device", "amp", "timeout", "force", "quiet", "out_in_root"),
          ("seeds", "affinity", "preset", "beta", "logt", "bg_mode", "bg_const", "bg_power", "walk")),
    Stage("train-seg", "segnet", ALL, ("backbone", "masks", "epochs")),
    Stage("predict-seg", "preds", ("device", "amp", "timeout", "workers", "force", "quiet", "out_in_root"), ("ckpt", "scales", "flip", "fuse", "crf")),
    Stage("evaluate", "metrics", ("workers", "force", "quiet", "out_in_root")),
    Stage("report", "report", None),
)  # fmt: skip

BY_NAME = {s.name: s for s in STAGES}


def writing(*kinds: str) -> tuple[str, ...]:
    """The stages whose --out holds one of ``kinds``, in pipeline order (e.g. what train-seg accepts
    as masks: ``writing("masks", "preds")``)."""
    return tuple(s.name for s in STAGES if s.writes in kinds)


def kind_of(stage: str | None) -> str | None:
    """The kind of artifact ``stage`` writes (None for a name no usage command has)."""
    s = BY_NAME.get(stage or "")
    return s.writes if s else None


# manifests that no command of their own writes: stage -> what writes them
OTHER_WRITERS = {"coco-masks": "a stage given --dataset coco with annotations/instances_<split>.json"}


def producer(stage: str) -> str:
    """The command that writes ``stage``'s artifact (for "run this first" messages)."""
    return f"usage {stage}" if stage in BY_NAME else OTHER_WRITERS.get(stage, stage)
