"""``usage refine-psa``: seeds -> pseudo masks (PSA AffinityNet + random walk, dense CRF)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from usage_cli.commands._options import (
    Beta,
    BgConst,
    BgMode,
    BgPower,
    Logt,
    Radius,
    Walk,
    WalkNorm,
    data_options,
    number_pair,
    runtime_options,
)
from usage_cli.config import ConfigFile, PrintConfig
from usage_cli.dataspec import DataSpec
from usage_cli.presets import REFINE_PSA, preset_help, refine_psa_preset_help
from usage_cli.runtime import DEFAULTS, Runtime


@data_options(split="Split AffinityNet is trained on.")
@runtime_options(
    "refine-psa", workers="CRF and data-loading worker processes.",
    resume="Continue AffinityNet training from <out>/affinity-train/last.pt.",
    force="Replace a finished or unfinished run of other options in OUT (the masks; confident/ and affinity-train/ are kept while their own manifests match); also refine seeds made from another data set than the one given (recorded in the manifest).",
)  # fmt: skip
def command(
    ctx: typer.Context,
    seeds: Annotated[Path | None, typer.Option(help="Seed store from `usage gen-seeds` (seeds.h5). Required (here or in --config).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder: <id>.png masks, manifest.json, affinity.pt, confident/. Required (here or in --config).")] = None,
    data: DataSpec = DataSpec(split="train_aug"),
    infer_split: Annotated[str | None, typer.Option(help="Split to write masks for (default: --split).")] = None,
    infer_split_file: Annotated[Path | None, typer.Option(help="Explicit split list of the images to write masks for.")] = None,
    preset: Annotated[str, typer.Option(help=refine_psa_preset_help())] = "auto",
    config: ConfigFile = None,
    print_config: PrintConfig = False,
    crf_la: Annotated[float | None, typer.Option(help=preset_help("crf_la", "Low background power for confident foreground.", REFINE_PSA))] = None,
    crf_ha: Annotated[float | None, typer.Option(help=preset_help("crf_ha", "High background power for confident background.", REFINE_PSA))] = None,
    crf: Annotated[bool, typer.Option(help="Dense CRF on the confident labels.")] = True,
    beta: Beta = None,
    logt: Logt = None,
    bg_mode: BgMode = None,
    bg_power: BgPower = None,
    bg_const: BgConst = None,
    walk_norm: WalkNorm = None,
    radius: Radius = 5,
    backbone: Annotated[str, typer.Option(help="resnet50, resnet101, efficientnet_lite0, deit_s, deit_t or a timm name of a supported family (ViT / DeiT, ResNet, EfficientNet, ConvNeXt, ...; docs/architecture.md).")] = "resnet50",
    pretrained: Annotated[bool | None, typer.Option("--pretrained/--no-pretrained", help=preset_help("pretrained", "Start AffinityNet from ImageNet weights (efficientnet_lite0/lite2: bundled, offline; others: hub, or --weights FILE).", REFINE_PSA), show_default=False)] = None,
    weights: Annotated[Path | None, typer.Option(help="Local backbone weights file.")] = None,
    epochs: Annotated[int, typer.Option(help="AffinityNet epochs.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Crops per step per process.")] = 8,
    crop: Annotated[int, typer.Option(help="Square training crop (a multiple of the backbone's stride).")] = 448,
    lr: Annotated[float, typer.Option(help="Backbone learning rate (new layers 10x), SGD, poly.")] = 0.01,
    weight_decay: Annotated[float, typer.Option(help="SGD weight decay.")] = 5e-4,
    head_lr_mult: Annotated[float, typer.Option(help="Learning-rate factor of the new layers.")] = 10.0,
    scale: Annotated[str, typer.Option(help="Random rescale range of the training crops, LOW:HIGH.")] = "0.7:1.3",
    img_size: Annotated[int, typer.Option(help="Transformer backbones: position-embedding grid size.")] = 224,
    walk: Walk = "auto",
    aff_out: Annotated[Path | None, typer.Option(help="Where to write the AffinityNet checkpoint (default <out>/affinity.pt).")] = None,
    affinity: Annotated[Path | None, typer.Option(help="A trained AffinityNet (affinity.pt of an earlier run or of `usage train-aff`): skip label making and training, only walk --split.")] = None,
    runtime: Runtime = DEFAULTS,
) -> None:
    """Refine seeds into pseudo masks: psa-labels, train-aff and psa-walk in one run."""
    from usage_cli.chains.refine_psa import RefinePsaConfig, resolve, run
    from usage_cli.config import apply_cli_config
    from usage_cli.progress import log

    cfg = RefinePsaConfig(
        data=data, seeds=seeds, out=out, infer_split=infer_split, infer_split_file=infer_split_file, preset=preset, crf_la=crf_la, crf_ha=crf_ha, crf=crf, beta=beta, logt=logt,
        bg_mode=bg_mode, bg_power=bg_power, bg_const=bg_const, walk_norm=walk_norm, radius=radius, backbone=backbone, pretrained=pretrained,
        weights=weights, epochs=epochs, batch_size=batch_size, crop=crop, lr=lr, weight_decay=weight_decay,
        head_lr_mult=head_lr_mult, scale=number_pair(scale, "--scale"), img_size=img_size, walk=walk, aff_out=aff_out, affinity=affinity,
        runtime=runtime,
    )  # fmt: skip
    cfg = apply_cli_config(ctx, cfg, config, print_config, resolve=resolve)
    res = run(cfg)
    log(f"refine-psa: wrote {res['images']} masks to {res['out']} (affinity {res['affinity']})", cfg.runtime.quiet)
