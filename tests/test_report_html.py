"""`usage report --html` on a tiny hand-built run: two seed stores (a "CAM" and a "USAGE" one) and
pseudo masks for 6 synthetic val images, scored by `usage evaluate`; the page, its figures' data,
its gallery, missing optional inputs, bad input, atomic publication. Also the metrics.json fields the
page needs (per-image mIoU, FPR / FNR curves) and the named gen-seeds overlays."""

from __future__ import annotations

import json
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from usage_cli.artifacts.labels import read_label_png, write_label_png
from usage_cli.artifacts.manifest import build_manifest, write_manifest
from usage_cli.artifacts.seeds import SeedWriter
from usage_cli.cli import app
from usage_cli.data import load_dataset
from usage_cli.data.synth import generate
from usage_cli.report.inputs import load_entries
from usage_cli.stages.evaluate import EvaluateConfig
from usage_cli.stages.evaluate import run as evaluate
from usage_cli.stages.report import ReportConfig, write_html
from usage_cli.stages.report import run as report

pytest.importorskip("matplotlib")
runner = CliRunner()
SEEDS = ("seeds-cam-val", "seeds-usage-val")


def _seed_maps(gt: np.ndarray, keys: tuple[int, ...], rng, shift: int) -> np.ndarray:
    """Maps that follow the mask, ``shift`` pixels off to the right, plus noise."""
    maps = [np.clip(0.6 * np.roll(gt == k, shift, axis=1) + 0.4 * rng.random(gt.shape), 0, 1) for k in keys]
    return np.stack(maps).astype(np.float32) if maps else np.zeros((0, *gt.shape), np.float32)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """``base/run``: data/, seeds-cam-val/, seeds-usage-val/, masks-val/ and metrics/*.json, with the
    paths recorded relative to ``base`` (as `make` does)."""
    base = tmp_path_factory.mktemp("report")
    run = base / "run"
    generate(run / "data", n_train=2, n_val=6, size=48, seed=3)
    ds = load_dataset("voc", run / "data", "val")
    rng = np.random.default_rng(0)
    cfg = {"dataset": "voc", "root": "run/data", "split": "val"}
    for name, shift in zip(SEEDS, (9, 3), strict=True):
        with SeedWriter(run / name / "seeds.h5", {"class_names": list(ds.meta.class_names)}) as w:
            for r in ds.records:
                gt = read_label_png(r.mask_path)
                w.write(r.id, r.labels, _seed_maps(gt, r.labels, rng, shift), gt.shape)
            # the USAGE store records its own threshold, as gen-seeds --bg-threshold auto does
            w.commit({"bg_threshold": 0.437, "bg_threshold_rule": "test"} if name == SEEDS[1] else None)
        write_manifest(run / name, build_manifest("gen-seeds", {**cfg, "ckpt": f"run/cls-{name}/checkpoint.pt"}))
    for r in ds.records:  # pseudo masks: the ground truth with the left third turned to background
        gt = read_label_png(r.mask_path)
        gt[:, : gt.shape[1] // 3] = 0
        write_label_png(run / "masks-val" / f"{r.id}.png", gt)
    write_manifest(run / "masks-val", build_manifest("refine-psa", {**cfg, "seeds": "run/seeds-usage-val/seeds.h5"}))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        for name, pred in (*((s, f"run/{s}/seeds.h5") for s in SEEDS), ("masks-val", "run/masks-val")):
            evaluate(EvaluateConfig(dataset="voc", root=Path("run/data"), split="val", pred=Path(pred), workers=1, quiet=True,
                                    out=Path(f"run/metrics/{name}.json")))  # fmt: skip
    (run / "metrics" / "rows.json").write_text("[]")  # `usage report --out` rows: not metrics, skipped in a RUN_DIR
    return run


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.text, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def _parse(index: Path) -> _Page:
    p = _Page()
    p.feed(index.read_text(encoding="utf-8"))
    p.close()
    return p


def _rows(index: Path) -> list[str]:
    """Gallery row ids, in page order."""
    html = index.read_text()
    return [chunk.split("<", 1)[0].split(">")[-1] for chunk in html.split('<div class="row-head">')[1:]]


def test_page_parses_images_exist_and_names_every_artifact_and_class(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recorded relative paths are found under the RUN_DIR
    out = tmp_path / "rep"
    rows = report(ReportConfig(metrics=(run_dir,), html=out, gallery=4))
    assert [r["name"] for r in rows] == [*SEEDS, "masks-val"]  # seeds first (CAM before USAGE), rows.json skipped
    page = _parse(out / "index.html")
    assert "script" not in page.tags and page.imgs
    for src in page.imgs:
        assert not src.startswith(("http", "/")) and (out / src).is_file(), src
    text = " ".join(page.text)
    for name in (*SEEDS, "masks-val", "gen-seeds", "refine-psa", "ground truth"):
        assert name in text
    for cls in load_dataset("voc", run_dir / "data", "val").meta.all_names:
        assert cls in text
    assert len(_rows(out / "index.html")) == 4
    assert not list(tmp_path.glob(".rep.*"))  # no temporary folder left beside it


def test_two_seed_stores_draw_both_curves_and_bars_sorted_by_gap(run_dir, tmp_path):
    from matplotlib.colors import to_rgb

    entries = load_entries((run_dir,))
    res = write_html(entries, [], ReportConfig(metrics=(run_dir,), html=tmp_path / "rep", gallery=0))
    metrics = {e.name: e.metrics for e in entries}
    mIoU, fpr, fnr = res.figures["curves-val"].axes
    for name in SEEDS:
        curve = metrics[name]["curve"]
        (line,) = [ln for ln in mIoU.get_lines() if ln.get_label().startswith(name)]
        assert np.allclose(line.get_xdata(), [float(t) for t in curve])
        assert np.allclose(line.get_ydata(), list(curve.values()))
        marker, *own = [c for c in mIoU.collections if np.allclose(c.get_facecolor()[0][:3], to_rgb(line.get_color()))]
        assert tuple(marker.get_offsets()[0]) == pytest.approx((metrics[name]["threshold"], metrics[name]["miou"]))
        pipeline = metrics[name].get("pipeline")  # the store's own threshold: a cross at its exact score
        assert (pipeline is not None) == (name == SEEDS[1]) and len(own) == (pipeline is not None)
        if pipeline:
            assert tuple(own[0].get_offsets()[0]) == pytest.approx((0.437, pipeline["miou"]))
            assert "no-GT t=0.44" in line.get_label()
        for ax, key in ((fpr, "curve_fpr"), (fnr, "curve_fnr")):
            (ln,) = [ln for ln in ax.get_lines() if ln.get_label().startswith(name)]
            assert np.allclose(ln.get_ydata(), list(metrics[name][key].values()))
    (bars,) = res.figures["classes-val"].axes
    assert [c.get_label() for c in bars.containers] == [*SEEDS, "masks-val"]
    order = [t.get_text() for t in bars.get_yticklabels()]
    first, last = metrics[SEEDS[0]]["per_class"], metrics["masks-val"]["per_class"]
    gaps = [last[c]["iou"] - first[c]["iou"] for c in order if last[c]["iou"] is not None and first[c]["iou"] is not None]
    assert gaps == sorted(gaps, reverse=True) and set(order) <= set(first)
    widths = [b.get_width() for b in bars.containers[1]]  # the USAGE seeds' bars, in the sorted class order
    assert widths[0] == pytest.approx(metrics[SEEDS[1]]["per_class"][order[0]]["iou"])


def test_gallery_worst_first_ids_and_reproducible(run_dir, tmp_path):
    a = write_html(load_entries((run_dir,)), [], ReportConfig(metrics=(run_dir,), html=tmp_path / "a", gallery=4))
    (g,) = a.galleries
    scores = [r.score for r in g.rows]
    assert g.reference == "masks-val" and None not in scores and scores == sorted(scores)
    per_image = json.loads((run_dir / "metrics" / "masks-val.json").read_text())["per_image"]
    assert [r.id for r in g.rows][:2] == sorted(per_image, key=lambda i: (per_image[i], i))[:2]  # the 2 worst are in
    for r in g.rows:
        assert r.score == pytest.approx(per_image[r.id], abs=0.01)  # the gallery's own score agrees with evaluate's
        titles = [grp.title for grp in r.groups]
        assert titles == ["image", *SEEDS, "masks-val", "ground truth"]
        heat = [t.caption for t in r.groups[1].tiles if t.kind == "heat"]
        names = load_dataset("voc", run_dir / "data", "val").meta.all_names
        assert heat == [names[k] for k in sorted({int(k) for k in _labels(run_dir, r.id)})]
    b = write_html(load_entries((run_dir,)), [], ReportConfig(metrics=(run_dir,), html=tmp_path / "b", gallery=4))
    assert [r.id for r in b.galleries[0].rows] == [r.id for r in g.rows]
    res = runner.invoke(app, ["report", str(run_dir), "--html", str(tmp_path / "c"), "--ids", "val_00003,val_00001"])
    assert res.exit_code == 0, res.output
    assert sorted(_rows(tmp_path / "c" / "index.html")) == ["val_00001", "val_00003"]
    res = runner.invoke(app, ["report", str(run_dir), "--html", str(tmp_path / "d"), "--ids", "val_00001", "--ids", "nope"])
    assert res.exit_code == 2 and "--ids: 1 unknown id(s) nope" in res.output and not (tmp_path / "d").exists()


def _labels(run_dir: Path, image_id: str) -> tuple[int, ...]:
    return next(r.labels for r in load_dataset("voc", run_dir / "data", "val").records if r.id == image_id)


def test_missing_ground_truth_masks_and_metrics_give_a_page_without_them(run_dir, tmp_path, monkeypatch):
    """A copy with no ground-truth masks, no pseudo masks and one seed store without metrics."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    shutil.rmtree(run / "data" / "VOCdevkit" / "VOC2012" / "SegmentationClass")
    shutil.rmtree(run / "masks-val")
    for f in ("masks-val.json", "seeds-cam-val.json"):
        (run / "metrics" / f).unlink()
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["report", "run", "--html", "rep", "--gallery", "3"])
    assert res.exit_code == 0, res.output
    text = " ".join(_parse(tmp_path / "rep" / "index.html").text)
    assert "seeds-cam-val" in text and "seeds-usage-val" in text  # the unscored store is found and shown
    assert "ground truth" not in text and "pseudo mask" not in text and "masks-val" not in text
    (g,) = write_html(load_entries((run,)), [], ReportConfig(metrics=(run,), html=tmp_path / "x", gallery=3)).galleries
    assert len(g.rows) == 3 and all(r.score is None for r in g.rows)
    assert all([grp.title for grp in r.groups] == ["image", "seeds-cam-val", "seeds-usage-val"] for r in g.rows)


def test_moved_run_dir_still_finds_its_artifacts(run_dir, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere" / "run2"
    shutil.copytree(run_dir, moved)
    monkeypatch.chdir(tmp_path)  # "run/seeds-usage-val/seeds.h5" does not exist from here
    entries = load_entries((moved / "metrics" / "seeds-usage-val.json",))
    assert entries[0].artifact == moved / "seeds-usage-val" / "seeds.h5" and entries[0].dataset.root == moved / "data"


def test_bad_input_is_one_line_exit_2(run_dir, tmp_path):
    (tmp_path / "x.json").write_text('{"a": 1}')
    res = runner.invoke(app, ["report", str(tmp_path / "x.json"), "--html", str(tmp_path / "r")])
    assert res.exit_code == 2 and "not a usage metrics.json" in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["report", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "no metrics files" in res.output
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "file", tmp_path / "file" / "rep"):  # a file; a folder that cannot be made
        res = runner.invoke(app, ["report", str(run_dir), "--html", str(bad)])
        assert res.exit_code == 2 and "--html" in res.output and "Traceback" not in res.output, res.output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    res = runner.invoke(app, ["report", str(run_dir), "--html", str(tmp_path / "other")])
    assert res.exit_code == 2 and "not a report folder" in res.output and (tmp_path / "other" / "keep.txt").exists(), res.output


def test_without_matplotlib_html_names_the_extra(run_dir, tmp_path, monkeypatch):
    for mod in ("matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)
    res = runner.invoke(app, ["report", str(run_dir), "--html", str(tmp_path / "r")])
    assert res.exit_code == 2 and "pip install 'usage-wsss[viz]'" in res.output
    assert runner.invoke(app, ["report", str(run_dir)]).exit_code == 0  # the table needs no matplotlib


def test_failed_report_leaves_the_previous_one_and_no_temporary(run_dir, tmp_path, monkeypatch):
    out = tmp_path / "rep"
    report(ReportConfig(metrics=(run_dir,), html=out, gallery=1))
    before = (out / "index.html").read_text()

    def boom(*a, **k):
        raise RuntimeError("killed")

    monkeypatch.setattr("usage_cli.report.gallery.render_gallery", boom)
    with pytest.raises(RuntimeError):
        report(ReportConfig(metrics=(run_dir,), html=out, gallery=1))
    assert (out / "index.html").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_evaluate_records_per_image_miou_and_fpr_fnr_curves(run_dir):
    m = json.loads((run_dir / "metrics" / "seeds-usage-val.json").read_text())
    assert m["root"] == "run/data" and set(m["per_image"]) == {f"val_{i:05d}" for i in range(6)}
    for t, v in m["curve"].items():  # IoU + FPR + FNR = 100 at every threshold
        assert v + m["curve_fpr"][t] + m["curve_fnr"][t] == pytest.approx(100.0, abs=1e-3)


def test_per_image_miou_golden(tmp_path):
    """Hand-derived: a 2x3 image, one background pixel predicted as cat: bg 2/3, cat 3/4 -> 70.83."""
    from PIL import Image

    v = tmp_path / "data" / "VOCdevkit" / "VOC2012"
    (v / "SegmentationClass").mkdir(parents=True)
    (v / "ImageSets" / "Segmentation").mkdir(parents=True)
    gt = {"a": np.array([[0, 0, 1], [0, 1, 1]], np.uint8), "b": np.array([[2, 2, 0], [255, 0, 0]], np.uint8)}
    for i, g in gt.items():
        Image.fromarray(g, "L").save(v / "SegmentationClass" / f"{i}.png")
    (v / "ImageSets/Segmentation/val.txt").write_text("a\nb\n")
    (tmp_path / "data" / "classes.txt").write_text("cat\ndog\n")
    write_label_png(tmp_path / "p" / "a.png", np.array([[0, 1, 1], [0, 1, 1]], np.uint8))
    write_label_png(tmp_path / "p" / "b.png", gt["b"])
    m = evaluate(EvaluateConfig(dataset="voc", root=tmp_path / "data", split="val", pred=tmp_path / "p", workers=1))
    assert m["per_image"] == {"a": pytest.approx(100 * (2 / 3 + 3 / 4) / 2, abs=0.01), "b": 100.0}
    with SeedWriter(tmp_path / "s" / "seeds.h5", {}) as w:  # separable at t in [0.25, 0.6): best t = 0.25
        w.write("a", [1], np.array([[[0.1, 0.2, 0.9], [0.1, 0.8, 0.7]]]), (2, 3))
        w.write("b", [2], np.array([[[0.6, 0.6, 0.2], [0.0, 0.1, 0.25]]]), (2, 3))
        w.commit()
    s = evaluate(EvaluateConfig(dataset="voc", root=tmp_path / "data", split="val", pred=tmp_path / "s" / "seeds.h5", workers=1))
    assert s["threshold"] == pytest.approx(0.25) and s["per_image"] == {"a": 100.0, "b": 100.0}


def test_gen_seeds_overlay_tiles_carry_class_name_and_threshold():
    from usage_cli.report.overlays import overlay_panel

    image = np.full((64, 64, 3), 128, np.uint8)
    cam = np.zeros((2, 64, 64), np.float32)
    panel = overlay_panel(image, cam, np.array([1, 2]), 0.3, ("background", "cat", "dog"))
    tiles = np.split(panel, 4, axis=1)
    plain = (0.5 * image + 0.5 * np.array([0, 0, 127], np.uint8)).astype(np.uint8)  # jet(0) blended
    for tile in tiles[1:]:  # each heat map and the seed: a dark box with white text in the corner
        corner = tile[:14, :40].reshape(-1, 3)
        assert (corner == 0).all(1).any() and (corner.min(1) > 180).any()  # box, antialiased white text
    assert (tiles[1][40:] == plain[40:]).all()  # the rest of the heat map is untouched
    assert not np.array_equal(tiles[1][:14, :40], tiles[2][:14, :40])  # "cat" and "dog" differ
