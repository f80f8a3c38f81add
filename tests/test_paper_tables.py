"""bench/paper_tables.py: the summary maths, the row definitions, the commands, the orchestration
(on a fake ``usage`` executable, fast) and one real tiny table1 run through the CLI."""

from __future__ import annotations

import json
import math
import shlex
import sys
import textwrap
from pathlib import Path

import pytest
from bench_module import load_bench

from usage_cli.metrics.stats import fmt_stat, mean_std, paired_diffs

pt = load_bench("paper_tables")


# ------------------------------------------------------------------------------------------ maths
def test_mean_and_sample_std_golden():
    st = mean_std([50.0, 52.0, 57.0])
    assert st["n"] == 3 and st["mean"] == pytest.approx(53.0)
    assert st["std"] == pytest.approx(math.sqrt(13.0))  # ((-3)^2 + (-1)^2 + 4^2) / (3 - 1) = 13
    st = mean_std([1.0, 2.0, 3.0, 4.0])
    assert st["std"] == pytest.approx(1.2909944487358056)
    one = mean_std([47.25])
    assert one == {"mean": 47.25, "std": None, "n": 1}
    assert mean_std([None, float("nan"), 3.0])["n"] == 1  # unfinished / undefined values are left out
    assert mean_std([]) == {"mean": None, "std": None, "n": 0}


def test_paired_differences_golden():
    row = {0: 50.0, 1: 52.0, 2: 55.0, 3: 60.0}
    cam = {0: 45.0, 1: 49.0, 2: 48.0, 4: 10.0}  # seeds 3 and 4 have no pair
    d = paired_diffs(row, cam)
    assert d == {0: 5.0, 1: 3.0, 2: 7.0}
    st = mean_std(d.values())
    assert st["mean"] == pytest.approx(5.0) and st["std"] == pytest.approx(2.0)
    # unpaired stds would be sqrt(6.33) and sqrt(4.33); the paired spread is that of the differences
    assert paired_diffs({0: 1.0}, {0: None}) == {}


def test_summarize_and_format():
    rows, _ = pt.table_rows("table1", "transformer")
    runs = []
    for seed, (a, b, c) in enumerate([(40.0, 50.0, 60.0), (42.0, 51.0, 65.0), (44.0, 55.0, 61.0)]):
        for name, v in zip(("cam", "cm", "cm+aa"), (a, b, c), strict=True):
            m = {"miou": v, "fpr": 20.0 + seed, "fnr": 30.0, "threshold": 0.3, "val_miou": v - 1}
            runs.append({"row": name, "seed": seed, "status": "done", "metrics": m, "wall_s": {"total": 10.0}})
    runs.append({"row": "cm", "seed": 9, "status": "failed"})  # a failed run counts nowhere
    s = {e["row"]: e for e in pt.summarize(rows, runs)}
    assert s["cam"]["miou"]["mean"] == pytest.approx(42.0) and s["cam"]["miou"]["std"] == pytest.approx(2.0)
    assert s["cm"]["d_miou"]["per_seed"] == {0: 10.0, 1: 9.0, 2: 11.0}
    assert s["cm"]["d_miou"]["mean"] == pytest.approx(10.0) and s["cm"]["d_miou"]["std"] == pytest.approx(1.0)
    assert s["cm+aa"]["d_miou"]["mean"] == pytest.approx(20.0) and s["cm+aa"]["d_miou"]["std"] == pytest.approx(3.0)
    assert s["cm+aa"]["d_val_miou"]["mean"] == pytest.approx(20.0)
    assert s["cam"]["fpr"]["std"] == pytest.approx(1.0) and s["cm"]["seeds"] == [0, 1, 2]
    assert fmt_stat(s["cm+aa"]["d_miou"], signed=True) == "+20.0 ± 3.0"
    assert fmt_stat(mean_std([47.31])) == "47.3 (n=1)"
    assert fmt_stat(mean_std([])) == "-"
    assert fmt_stat(mean_std([-0.004, 0.001]), signed=True) == "+0.0 ± 0.0"


# ------------------------------------------------------------------------------------------- rows
def test_table1_rows_pass_mapping_and_reg_explicitly():
    for family in ("cnn", "transformer"):
        rows, notes = pt.table_rows("table1", family)
        assert [r.name for r in rows] == ["cam", "cm", "cm+aa"] and not notes
        flags = {r.name: r.flags for r in rows}
        t = "1" if family == "transformer" else "50"  # the family's tau1, given explicitly
        assert flags == {"cam": ("--mapping", "cam", "--reg", "none"), "cm": ("--mapping", "cm", "--reg", "none", "--tau1", t),
                         "cm+aa": ("--mapping", "cm", "--reg", "aa", "--tau1", t, "--aa-schedule", "self-adaptive")}  # fmt: skip
        assert [r.baseline for r in rows] == [True, False, False]


def test_rows_with_the_same_training_share_their_runs():
    t1 = {r.name: r.key for r in pt.table_rows("table1", "cnn")[0]}
    t5 = {r.name: r.key for r in pt.table_rows("table5", "cnn", [1.0, 50.0])[0]}
    t7 = {r.name: r.key for r in pt.table_rows("table7", "cnn")[0]}
    assert t1["cm+aa"] == t5["cm+aa tau1=50"] == t7["cm+aa self-adaptive"]
    assert t1["cam"] == t5["cam"] == t7["cam"]
    assert len({t5["cm+aa tau1=1"], t5["cm+aa tau1=50"], t7["cm+aa fixed"], t7["cm+aa linear"], t1["cm"]}) == 5
    row = pt.table_rows("table1", "cnn")[0][2]
    assert pt.run_dir(Path("/o"), "table7", row, 2) == Path("/o/runs/mapping_cm_reg_aa_tau1_50_aa-schedule_self-adaptive/seed2")


def test_table5_table7_rows():
    rows, _ = pt.table_rows("table5", "cnn", [1.0, 2.0, 50.0])
    assert [r.name for r in rows] == ["cam", "cm+aa tau1=1", "cm+aa tau1=2", "cm+aa tau1=50"]
    assert rows[3].flags == ("--mapping", "cm", "--reg", "aa", "--tau1", "50", "--aa-schedule", "self-adaptive") and rows[3].paper == 57.7
    assert "--tau1" not in rows[0].flags
    rows, _ = pt.table_rows("table7", "transformer")
    assert [r.flags[-1] for r in rows[1:]] == ["fixed", "linear", "self-adaptive"]
    assert all(r.flags[:4] == ("--mapping", "cm", "--reg", "aa") for r in rows[1:])
    assert all(r.slug.replace("+", "").replace("=", "").replace(".", "").replace("_", "").replace("-", "").isalnum() for r in rows)


def test_table8_skips_mct_for_a_cnn():
    cnn, notes = pt.table_rows("table8", "cnn")
    assert "mct+none" not in [r.name for r in cnn]
    assert len(notes) == 1 and "mct" in notes[0] and "transformer" in notes[0]
    vit, notes = pt.table_rows("table8", "transformer")
    assert [r.name for r in vit] == ["cam+none", "mil+none", "cm+none", "mct+none", "cam+aa", "cm+gt", "cm+oaa", "cm+aa"]
    assert not notes
    assert all(r.flags[0] == "--mapping" and r.flags[2] == "--reg" for r in vit)
    assert [r.name for r in vit if r.baseline] == ["cam+none"]
    extra, _ = pt.table_rows("table8", "cnn", only=["cam+gt"])  # a variant the paper has, on request
    assert [r.name for r in extra] == ["cam+none", "cam+gt"]


# -------------------------------------------------------------------------------------- dry run
def _lines(out: str) -> list[list[str]]:
    return [shlex.split(ln) for ln in out.splitlines() if ln and not ln.startswith("#")]


def test_dry_run_prints_the_commands(tmp_path, capsys):
    out = tmp_path / "t"
    assert pt.main(["table1", "--root", str(tmp_path / "x"), "--backbone", "efficientnet_lite0", "--seeds", "0,1",
                    "--out", str(out), "--dry-run"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    cmds = _lines(text)
    train = [c for c in cmds if c[1] == "train-cls"]
    assert len(train) == 6 and len([c for c in cmds if c[1] == "gen-seeds"]) == 12 and len(cmds) == 30
    for c in train:
        i = c.index
        assert c[i("--preset") + 1] == "paper" and c[i("--backbone") + 1] == "efficientnet_lite0" and "--quiet" in c
        assert c[i("--img-size") + 1] == "128" and "--no-pretrained" in c
    first = train[0]
    assert first[first.index("--mapping") + 1] == "cam" and first[first.index("--reg") + 1] == "none"
    assert first[first.index("--seed") + 1] == "0" and first[first.index("--out") + 1] == str(out / "runs" / "mapping_cam_reg_none" / "seed0" / "cls")
    assert [c[c.index("--seed") + 1] for c in train] == ["0", "0", "0", "1", "1", "1"]  # seed-major
    seeds = next(c for c in cmds if c[1] == "gen-seeds")
    assert seeds[seeds.index("--overlays") + 1] == "0" and seeds[seeds.index("--scales") + 1] == "1.0,0.5,1.5"
    assert seeds[seeds.index("--split") + 1] == "train" and seeds[seeds.index("--ckpt") + 1].endswith("seed0/cls/checkpoint.pt")
    ev = [c for c in cmds if c[1] == "evaluate"]
    assert ev[0][ev[0].index("--out") + 1] == str(out / "runs" / "mapping_cam_reg_none" / "seed0" / "metrics-train.json")
    assert "--bg-threshold" not in ev[0] and ev[1][ev[1].index("--bg-threshold") + 1] == "<T>"
    assert ev[1][ev[1].index("--split") + 1] == "val" and "val split 'val' not found" in text
    assert not (out / "table1").exists()  # nothing ran


def _last(cmd: list[str], flag: str) -> str:
    return cmd[len(cmd) - 1 - cmd[::-1].index(flag) + 1]


def test_dry_run_paper_settings(tmp_path, capsys):
    pt.main(["table5", "--root", str(tmp_path), "--backbone", "deit_s", "--seeds", "0", "--out", str(tmp_path / "o"),
             "--paper", "--val-split", "", "--extra", "--warmup-epochs 1 --tau1 3", "--gen-seeds-extra", "--refine none", "--dry-run"])  # fmt: skip
    cmds = _lines(capsys.readouterr().out)
    train = [c for c in cmds if c[1] == "train-cls"]
    assert [_last(c, "--tau1") for c in train[1:]] == ["0.5", "1", "2", "25", "50", "75"]  # the paper's columns
    c = train[0]
    assert c[c.index("--img-size") + 1] == "224" and c[c.index("--epochs") + 1] == "60" and "--pretrained" in c
    assert c[c.index("--lr") + 1] == "6.25e-05"  # 5e-4 x 64 / 512, the preset's rule
    seeds = next(c for c in cmds if c[1] == "gen-seeds")
    assert seeds[seeds.index("--scales") + 1] == "1.0,0.5,1.5,2.0" and "--flip" in seeds and seeds[-2:] == ["--refine", "none"]
    # --extra comes before the row's flags, so a row's own --tau1 (the last one given) wins
    assert train[1].index("--warmup-epochs") < train[1].index("--mapping") and train[1][train[1].index("--tau1") + 1] == "3"
    assert len(cmds) == 7 * 3  # no val steps


# ------------------------------------------------------------------ orchestration on a fake CLI
FAKE = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    argv = sys.argv[1:]
    cmd, opt = argv[0], {}
    for i, a in enumerate(argv):
        if a.startswith("--"):
            opt[a] = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else True
    with open(os.environ["FAKE_CALLS"], "a") as f:
        f.write(json.dumps(argv) + "\\n")
    if os.environ.get("FAKE_FAIL") == cmd:
        sys.exit(3)
    if cmd == "train-cls":
        out = Path(opt["--out"]); out.mkdir(parents=True, exist_ok=True)
        info = {"mapping": opt["--mapping"], "reg": opt["--reg"], "seed": int(opt["--seed"])}
        (out / "checkpoint.pt").write_text(json.dumps(info))
        (out / "log.jsonl").write_text('{"epoch": 0, "loss_cls": 0.9}\\n{"epoch": 1, "loss_cls": 0.5, "loss_reg": 0.1, "val_mAP": 70.0}\\n')
    elif cmd == "gen-seeds":
        out = Path(opt["--out"]); out.mkdir(parents=True, exist_ok=True)
        (out / "seeds.h5").write_text(Path(opt["--ckpt"]).read_text())
    elif cmd == "evaluate":
        info = json.loads(Path(opt["--pred"]).read_text())
        s = info["seed"]
        miou = {"cam": 40.0 + s, "cm": 50.0 + 2 * s}[info["mapping"]] + (5.0 if info["reg"] == "aa" else 0.0)
        fixed = "--bg-threshold" in opt
        m = {"miou": miou - (3.0 if fixed else 0.0), "fpr": 20.0, "fnr": 30.0, "per_class": {},
             "threshold": float(opt["--bg-threshold"]) if fixed else 0.37, "threshold_mode": "fixed" if fixed else "sweep-best"}
        Path(opt["--out"]).write_text(json.dumps(m))
''')


@pytest.fixture()
def fake_cli(tmp_path, monkeypatch):
    script = tmp_path / "fake_usage.py"
    script.write_text(FAKE)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.setattr(pt, "usage_exe", lambda: [sys.executable, str(script)])
    monkeypatch.setattr(pt, "split_exists", lambda dataset, root, split: (True, ""))

    def read_calls() -> list[list[str]]:
        return [json.loads(ln) for ln in calls.read_text().splitlines()] if calls.exists() else []

    return read_calls


def test_orchestration_resume_threshold_and_summary(tmp_path, fake_cli, capsys):
    out = tmp_path / "o"
    argv = ["table1", "--root", str(tmp_path), "--backbone", "deit_t", "--seeds", "0,1,2", "--out", str(out)]
    assert pt.main(argv) == 0
    calls = fake_cli()
    assert len(calls) == 3 * 3 * 5
    val_eval = [c for c in calls if c[0] == "evaluate" and "--bg-threshold" in c]
    assert len(val_eval) == 9 and all(c[c.index("--bg-threshold") + 1] == "0.37" for c in val_eval)
    doc = json.loads((out / "table1.json").read_text())
    assert [r["name"] for r in doc["rows"]] == ["cam", "cm", "cm+aa"] and len(doc["runs"]) == 9
    run = next(r for r in doc["runs"] if r["row"] == "cm+aa" and r["seed"] == 2)
    assert run["metrics"]["miou"] == 59.0 and run["metrics"]["val_miou"] == 56.0 and run["metrics"]["val_threshold"] == 0.37
    assert run["train_log"] == {"epoch": 1, "loss_cls": 0.5, "loss_reg": 0.1, "val_mAP": 70.0}
    assert set(run["wall_s"]) == {"train-cls", "gen-seeds", "evaluate", "gen-seeds-val", "evaluate-val", "total"}
    assert "--bg-threshold 0.37" in run["commands"]["evaluate-val"] and run["commands"]["train-cls"].count("--mapping cm --reg aa") == 1
    s = {e["row"]: e for e in doc["summary"]}
    assert s["cm"]["d_miou"]["mean"] == pytest.approx(11.0) and s["cm"]["d_miou"]["std"] == pytest.approx(1.0)
    assert s["cm+aa"]["d_val_miou"]["mean"] == pytest.approx(16.0)
    assert s["cam"]["miou"]["mean"] == pytest.approx(41.0) and s["cam"]["threshold"]["mean"] == pytest.approx(0.37)
    md = (out / "table1.md").read_text()
    assert "REDUCED settings" in md and "seeds 0,1,2 (n=3)" in md and "val: `val` at the threshold chosen on `train`" in md and "| cm+aa | `--mapping cm --reg aa --tau1 1 --aa-schedule self-adaptive` | 57.0 ± 2.0 |" in md
    assert md in capsys.readouterr().out
    # a second invocation reuses every run; a lost val metrics file reruns only its own step
    assert pt.main(argv) == 0 and len(fake_cli()) == 45
    (out / "runs" / "mapping_cm_reg_none_tau1_1" / "seed1" / "metrics-val.json").unlink()
    assert pt.main(argv) == 0
    assert [c[0] for c in fake_cli()[45:]] == ["evaluate"]
    # other settings in the same folder are refused rather than mixed
    with pytest.raises(SystemExit, match="other settings"):
        pt.main([*argv, "--epochs", "3"])


def test_orchestration_records_a_failure_and_goes_on(tmp_path, fake_cli, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_FAIL", "gen-seeds")
    out = tmp_path / "o"
    assert pt.main(["table8", "--root", str(tmp_path), "--backbone", "resnet50", "--seeds", "0", "--out", str(out), "--val-split", ""]) == 1
    doc = json.loads((out / "table8.json").read_text())
    assert len(doc["runs"]) == 7 and {r["status"] for r in doc["runs"]} == {"failed"}
    assert doc["runs"][0]["failed_step"] == "gen-seeds" and "mct+none skipped" in doc["notes"][0]
    md = (out / "table8.md").read_text()
    assert "FAILED: cam+none seed0 at gen-seeds" in md and "note: mct+none skipped" in md


# -------------------------------------------------------------------------------- real, tiny run
@pytest.mark.slow
def test_table1_end_to_end_one_seed(synth_root, tmp_path):
    out = tmp_path / "tables"
    rc = pt.main(["table1", "--root", str(synth_root), "--backbone", "deit_t", "--seeds", "0", "--out", str(out),
                  "--epochs", "1", "--img-size", "32", "--batch-size", "4", "--lr", "1e-3", "--scales", "1.0",
                  "--no-flip", "--workers", "0", "--device", "cpu"])  # fmt: skip
    assert rc == 0
    doc = json.loads((out / "table1.json").read_text())
    assert [e["row"] for e in doc["summary"]] == ["cam", "cm", "cm+aa"]
    for run in doc["runs"]:
        assert run["status"] == "done", run
        for k in ("miou", "fpr", "fnr", "threshold", "val_miou", "val_fpr", "val_fnr", "own_threshold", "own_miou"):
            assert math.isfinite(run["metrics"][k])
        # the no-GT column: the store's own threshold, scored on the same split, never above the sweep's best
        assert run["metrics"]["own_threshold"] == run["eval"]["pipeline"]["threshold"]
        assert run["metrics"]["own_miou"] <= run["metrics"]["miou"] + 1e-9
        assert run["metrics"]["val_threshold"] == run["metrics"]["threshold"] and run["val"]["threshold_mode"] == "fixed"
        assert "loss_cls" in run["train_log"] and run["wall_s"]["total"] > 0
    assert "loss_reg" in next(r for r in doc["runs"] if r["row"] == "cm+aa")["train_log"]
    for e in doc["summary"]:
        assert e["miou"]["n"] == 1 and math.isfinite(e["miou"]["mean"])
    assert doc["summary"][1]["d_miou"]["n"] == 1 and doc["summary"][2]["d_val_miou"]["n"] == 1
    assert doc["summary"][2]["d_own_miou"]["n"] == 1
    assert doc["val_used"] and doc["settings"]["mode"] == "reduced"
    md = (out / "table1.md").read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| ---")]
    table, diag = rows[:4], rows[4:]
    assert all(ln.count("(n=1)") >= 5 for ln in table[1:]) and "(n=1)" in md and "REDUCED settings" in md
    assert len(diag) == 1 + 3 and diag[0].startswith("| row | loss_cls | empty_share")  # the diagnostics table
    assert diag[3].split(" | ")[5] != "-" and diag[1].split(" | ")[5] == "-"  # aa_agree: the cm+aa row only
    assert all(e["diag"]["loss_cls"]["n"] == 1 for e in doc["summary"])
