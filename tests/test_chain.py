"""bench/chain.py: the steps of one seed's chain, the auto-preset candidates, and the table's paired gains."""

from __future__ import annotations

import argparse
import json

from bench_module import load_bench

ch = load_bench("chain")


def _args(**kw) -> argparse.Namespace:
    base = ch.parse_args(["--root", "R", "--backbone", "efficientnet_lite0", "--out", "O"])
    return argparse.Namespace(**{**vars(base), **kw})


def _settings():
    return {"device": "cpu", "workers": 0, "scales": "1.0", "flip": True}


def test_one_seed_chain_in_order(tmp_path):
    steps = [s for s, _, _ in ch.chain_commands(_args(), _settings(), tmp_path, "auto")]
    assert steps[:5] == ["gen-seeds-train", "gen-seeds-val", "refine-psa-train", "refine-psa-val", "train-seg"]
    assert steps[5:7] == ["predict-seg-train", "predict-seg-val"] and len([s for s in steps if s.startswith("evaluate")]) == 6
    cmds = {s: c for s, c, _ in ch.chain_commands(_args(), _settings(), tmp_path, "psa")}
    assert "--affinity" in cmds["refine-psa-val"] and cmds["refine-psa-train"][cmds["refine-psa-train"].index("--preset") + 1] == "psa"
    # one split only (coco128): no val steps
    assert not [s for s, _, _ in ch.chain_commands(_args(val_split=""), _settings(), tmp_path, "auto") if s.endswith("-val")]


def test_candidate_flags_are_the_cuts_of_the_stores_threshold(tmp_path):
    from usage_cli.algorithms.thresholds import psa_constants

    assert ch.candidate_flags("psa", tmp_path) == []
    (tmp_path / "manifest.json").write_text(json.dumps({"bg_threshold": 0.3}))
    flags = ch.candidate_flags("auto:fg=2/bg=0.5/logt=6", tmp_path)
    c = psa_constants(0.3, 2.0, 0.5)
    assert flags == ["--crf-la", str(c["crf_la"]), "--crf-ha", str(c["crf_ha"]), "--logt", "6"]


def test_table_gains_are_paired_and_without_ground_truth():
    meta = {"train_split": "train", "val_split": "val", "settings": {"pretrained": True, "epochs": 1, "img_size": 8, "batch_size": 1, "lr": 0.1,
            "aug": "none", "extra": "", "scales": "1.0"}, "dataset": "voc", "root": "R", "backbone": "b", "row": "cm+aa", "seeds": [0, 1],
            "presets": ["auto"], "gen_seeds_extra": "", "aff_args": "", "seg_args": "", "pred_args": ""}  # fmt: skip
    runs = {("auto", 0): {"seeds-train": 50.0, "seeds_auto-train": 40.0, "masks-train": 45.0, "preds-train": 44.0},
            ("auto", 1): {"seeds-train": 52.0, "seeds_auto-train": 42.0, "masks-train": 49.0, "preds-train": 50.0}}  # fmt: skip
    md = ch.render_md(meta, runs)
    row = next(line for line in md.splitlines() if line.startswith("| auto"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # masks - seeds at their own threshold: +5, +7 -> 6.0 ± 1.4; preds - masks: -1, +1 -> 0.0 ± 1.4
    assert cells[8] == "+6.0 ± 1.4" and cells[9] == "+0.0 ± 1.4"
    assert cells[1] == "51.0 ± 1.4" and cells[2] == "41.0 ± 1.4"


def test_a_tagged_budget_runs_beside_the_preset_and_shares_the_seeds(tmp_path):
    steps = {s: (c, p) for s, c, p in ch.chain_commands(_args(tag="aff8"), _settings(), tmp_path, "auto")}
    cmd, product = steps["refine-psa-train"]
    assert product == tmp_path / "auto@aff8" / "masks-train" / "manifest.json"
    assert cmd[cmd.index("--seeds") + 1] == str(tmp_path / "seeds-train" / "seeds.h5")  # the untagged run's seeds
    assert steps["evaluate-seeds-train"][1] == tmp_path / "metrics-seeds-train.json"
    assert ch.preset_dir(tmp_path, "auto") == tmp_path / "auto"
