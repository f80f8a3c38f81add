"""Seed store round trip and version refusal, atomic writes, manifests, label PNGs, checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch

from usage_cli.artifacts.atomic import atomic_path
from usage_cli.artifacts.checkpoint import clean_state_dict, load_checkpoint, save_checkpoint
from usage_cli.artifacts.labels import read_label_png, write_label_png
from usage_cli.artifacts.manifest import build_manifest, config_hash, read_manifest, write_manifest
from usage_cli.artifacts.seeds import ENCODING_VERSION, SeedReader, SeedWriter, partial_path
from usage_cli.errors import ArtifactError


def _cam(rng, n, h=5, w=7):
    return rng.random((n, h, w)).astype(np.float32)


def test_seed_store_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "seeds.h5"
    cams = {"a": _cam(rng, 2), "b/with/slash": _cam(rng, 1), "empty": np.zeros((0, 5, 7), np.float32)}
    with SeedWriter(path, {"num_classes": 20, "config": {"scales": [1.0, 0.5]}}) as w:
        w.write("a", [3, 15], cams["a"], (5, 7))
        w.write("b/with/slash", [1], cams["b/with/slash"], (5, 7))
        w.write("empty", [], cams["empty"], (5, 7))
        assert not path.exists()  # nothing published before commit
        w.commit()
    assert path.exists() and not partial_path(path).exists()
    with SeedReader(path) as r:
        assert r.ids() == sorted(cams)
        e = r.read("a")
        assert e.keys.tolist() == [3, 15] and e.size == (5, 7)
        assert e.cam.dtype == np.float16
        np.testing.assert_allclose(e.cam, cams["a"], atol=1e-3)
        assert r.read("empty").cam.shape == (0, 5, 7)
        assert r.attrs["config"] == {"scales": [1.0, 0.5]}
        assert r.attrs["num_classes"] == 20
        with pytest.raises(ArtifactError, match="no seeds for image 'zz'"):
            r.read("zz")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resident memory read from /proc (glibc's heap)")
def test_seed_writer_memory_stays_flat_over_many_images(tmp_path):
    # gen-seeds hands the writer maps of freed torch tensors, a batch at a time: glibc kept that heap
    # (pinned by HDF5's allocations) and the stage grew by ~9.5 MB an image until flush trimmed it
    def rss_mb():
        return int((open("/proc/self/statm").read().split())[1]) * 4096 / 2**20

    w = SeedWriter(tmp_path / "seeds.h5", {"config": {}}, resume=False)
    for i in range(64):
        if i == 16:
            start = rss_mb()  # after the allocator's warm-up
        w.write(f"im{i}", [1, 2], torch.rand(2, 375, 500).numpy(), (375, 500))
        if i % 8 == 7:
            w.flush()
    grown = rss_mb() - start
    w.close()
    assert grown < 24, f"{grown:.0f} MB more after 48 images of 1.5 MB maps"


def test_seed_store_refuses_other_major_version(tmp_path):
    path = tmp_path / "seeds.h5"
    with SeedWriter(path, {}) as w:
        w.write("a", [1], np.ones((1, 2, 2)), (2, 2))
        w.commit()
    with h5py.File(path, "a") as f:
        f.attrs["encoding-version"] = "2.0.0"
        f.attrs["producer"] = "usage 9.9.9"
    with pytest.raises(ArtifactError, match=r"version 2\.0\.0 \(written by usage 9\.9\.9\).*regenerate"):
        SeedReader(path)
    # a minor version bump is readable
    with h5py.File(path, "a") as f:
        f.attrs["encoding-version"] = ENCODING_VERSION.split(".")[0] + ".7.0"
    SeedReader(path).close()


def test_seed_store_refuses_foreign_and_incomplete_files(tmp_path):
    foreign = tmp_path / "other.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(ArtifactError, match="not a usage seed store"):
        SeedReader(foreign)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(ArtifactError, match="not a readable HDF5"):
        SeedReader(junk)
    missing = tmp_path / "seeds.h5"
    with SeedWriter(missing, {}) as w:  # interrupted: closed without commit
        w.write("a", [1], np.ones((1, 2, 2)), (2, 2))
    with pytest.raises(ArtifactError, match="unfinished run left a .partial"):
        SeedReader(missing)


def test_seed_writer_resumes_and_rejects_config_mismatch(tmp_path):
    path = tmp_path / "seeds.h5"
    with SeedWriter(path, {"config_hash": "abc"}) as w:
        w.write("a", [1], np.ones((1, 2, 2)), (2, 2))
    with SeedWriter(path, {"config_hash": "abc"}) as w:
        assert w.done_ids() == {"a"}
    with pytest.raises(ArtifactError, match="another config"):
        SeedWriter(path, {"config_hash": "xyz"})
    with SeedWriter(path, {"config_hash": "xyz"}, resume=False) as w:  # --force
        assert w.done_ids() == set()
    # a corrupt partial file is discarded, not trusted
    partial_path(path).write_bytes(b"garbage")
    with SeedWriter(path, {"config_hash": "abc"}) as w:
        assert w.done_ids() == set()


def test_seed_writer_killed_process_leaves_no_complete_file(tmp_path):
    path = tmp_path / "seeds.h5"
    code = textwrap.dedent(
        f"""
        import os, numpy as np
        from usage_cli.artifacts.seeds import SeedWriter
        w = SeedWriter({str(path)!r}, {{}})
        w.write("a", [1], np.ones((1, 4, 4)), (4, 4))
        w.flush()
        os._exit(9)  # killed mid-run: no commit, no cleanup
        """
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert not path.exists()
    with pytest.raises(ArtifactError):
        SeedReader(path)


def test_atomic_path_removes_temp_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"


def test_atomic_path_killed_writer_leaves_no_final_file(tmp_path):
    target = tmp_path / "big.bin"
    code = textwrap.dedent(
        f"""
        import os
        from usage_cli.artifacts.atomic import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"x" * 1000)
            os._exit(9)
        """
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert not target.exists()


def test_manifest_pins_inputs_and_names_missing_stage(tmp_path):
    data = tmp_path / "in.bin"
    data.write_bytes(b"abc")
    m = build_manifest("gen-seeds", {"a": 1}, inputs={"ckpt": data})
    assert m["inputs"]["ckpt"]["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert m["config_hash"] == config_hash({"a": 1}) and m["stage"] == "gen-seeds"
    out = tmp_path / "seeds"
    write_manifest(out, m)
    assert read_manifest(out / "seeds.h5", expect_stage="gen-seeds")["config"] == {"a": 1}
    with pytest.raises(ArtifactError, match=r"expected refine-psa; run `usage refine-psa` first"):
        read_manifest(out, expect_stage="refine-psa")
    with pytest.raises(ArtifactError, match=r"not found; run `usage train-cls` first"):
        read_manifest(tmp_path / "nothing", expect_stage="train-cls")
    assert json.loads((out / "manifest.json").read_text())["tool"] == "usage"


def test_label_png_round_trip_uses_voc_palette(tmp_path):
    label = np.array([[0, 1, 255], [20, 15, 0]], dtype=np.uint8)
    write_label_png(tmp_path / "x.png", label)
    np.testing.assert_array_equal(read_label_png(tmp_path / "x.png"), label)
    from PIL import Image

    img = Image.open(tmp_path / "x.png")
    assert img.mode == "P"
    pal = img.getpalette()
    assert pal[3:6] == [128, 0, 0] and pal[255 * 3 : 256 * 3] == [224, 224, 192]
    Image.new("RGB", (2, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(ArtifactError, match="mode RGB"):
        read_label_png(tmp_path / "rgb.png")


def test_checkpoint_round_trip_weights_only(tmp_path):
    state = {"model": {"module.w": torch.ones(2)}, "config": {"lr": 0.1, "scales": [1.0]}}
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["config"] == state["config"]
    assert list(clean_state_dict(loaded["model"])) == ["w"]
    assert list(clean_state_dict({"module._orig_mod.x": 1})) == ["x"]
    (tmp_path / "bad.pt").write_bytes(b"nope")
    with pytest.raises(ArtifactError, match="not a loadable usage checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
