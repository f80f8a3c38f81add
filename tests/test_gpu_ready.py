"""GPU and multi-GPU readiness, checked on the CPU (no GPU here): CUDA's autocast rules, device
strings, checkpoints written on another device, the data loader's per-rank streams, SyncBatchNorm,
the process-group timeout and the pieces DDP needs. The multi-process checks are in test_ddp.py."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest
import torch
from conftest import refused_under_autocast
from typer.testing import CliRunner

from usage_cli.cli import app
from usage_cli.engine.distributed import (
    DEFAULT_TIMEOUT_MIN,
    DistInfo,
    check_device,
    init_distributed,
    use_amp,
)
from usage_cli.errors import ConfigError

# ---------------------------------------------------------------- autocast: every task, and the loop


def _cls_task(reg: str, mapping: str = "cm", backbone: str = "deit_t"):
    from usage_cli.models.classifier import build_classifier
    from usage_cli.tasks.classification import ClassificationTask, ClsTaskConfig

    torch.manual_seed(0)
    net = build_classifier({"backbone": backbone, "num_classes": 3, "mapping": mapping, "img_size": 32, "tokens": "last-block"})
    return ClassificationTask(net, ClsTaskConfig(reg=reg, num_images=4))


def _cls_batch():
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randn(2, 3, 32, 32, generator=g), "label": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),
        "index": torch.tensor([0, 3]), "flip": torch.tensor([False, True]),
    }  # fmt: skip


def _tasks():
    from usage_cli.algorithms.affinity import search_offsets
    from usage_cli.models.affinitynet import build_affinitynet
    from usage_cli.models.segnet import build_segnet
    from usage_cli.tasks.affinity import AffinityTask
    from usage_cli.tasks.segmentation import SegmentationTask

    label = torch.randint(0, 3, (2, 2, 2), generator=torch.Generator().manual_seed(0))
    image = torch.randn(2, 3, 32, 32)
    return {
        **{f"classifier reg={r}": (lambda r=r: _cls_task(r), _cls_batch) for r in ("none", "aa", "gt", "oaa")},
        "classifier mct": (lambda: _cls_task("none", "mct"), _cls_batch),
        "classifier cnn oaa": (lambda: _cls_task("oaa", backbone="resnet18"), _cls_batch),
        "affinity deit_t": (
            lambda: AffinityTask(build_affinitynet({"backbone": "deit_t", "img_size": 32}), search_offsets(2)),
            lambda: {"image": image, "label": label},
        ),
        "segmentation": (
            lambda: SegmentationTask(build_segnet({"backbone": "resnet18", "num_classes": 3, "aspp_channels": 8})),
            lambda: {"image": image, "label": torch.randint(0, 3, (2, 32, 32))},
        ),
    }


@pytest.mark.parametrize("name", list(_tasks()))
def test_every_task_trains_a_step_under_autocast_without_an_op_cuda_refuses(name):
    make_task, make_batch = _tasks()[name]
    task = make_task().train()
    with refused_under_autocast() as guard:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = task(make_batch())
        out["loss"].backward()
    assert guard.calls == [], f"{name}: {guard.calls} inside the training autocast (CUDA autocast refuses it)"
    assert torch.isfinite(out["loss"])
    trainable = [p for p in task.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable), "a trainable parameter got no gradient (DDP would fail)"


def test_train_cls_oaa_with_amp_runs_the_cuda_code_path_on_the_cpu(synth_root, tmp_path):
    from usage_cli.stages.train_cls import TrainClsConfig, run

    cfg = TrainClsConfig(dataset="voc", root=synth_root, out=tmp_path / "oaa", split="train", backbone="deit_t", epochs=1, batch_size=4,
                         img_size=32, lr=1e-3, reg="oaa", pretrained=False, val_split=None, amp=True, device="cpu", quiet=True)  # fmt: skip
    with refused_under_autocast() as guard:
        run(cfg)
    assert guard.calls == []
    log = [json.loads(x) for x in (tmp_path / "oaa" / "log.jsonl").read_text().splitlines()]
    assert np.isfinite(log[0]["loss_reg"]) and log[0]["loss_reg"] > 0


def test_amp_defaults_to_cuda_only():
    assert use_amp(None, "cuda") and not use_amp(None, "cpu")
    assert use_amp(True, "cpu") and not use_amp(False, "cuda")


# ---------------------------------------------------------------- device strings


@pytest.mark.parametrize("bad", ["gpu", "GPU", "cuda1", "cuda:x", "cuda:-1", "cpu:0", "mps", "", " cuda"])
def test_device_strings_outside_the_grammar_are_config_errors(bad):
    with pytest.raises(ConfigError, match="--device must be auto, cpu, cuda or cuda:N"):
        check_device(bad)


def test_cuda_device_is_checked_against_the_gpus_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check_device("auto") == "cpu" and check_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="sees no CUDA device"):
        check_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert check_device("cuda") == "cuda" and check_device("cuda:0") == "cuda:0"
    with pytest.raises(ConfigError, match=r"--device cuda:1 needs GPU 1, but this machine has 1 \(cuda:0..cuda:0\)"):
        check_device("cuda:1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match="local rank 1 needs GPU 1"):
        check_device("cuda")


def _cli_cases(synth_root, tmp_path):
    from gt_seeds import write_ground_truth_seeds

    from usage_cli.data import load_dataset

    train = load_dataset("voc", synth_root, "train")
    seeds = write_ground_truth_seeds(tmp_path / "seeds.h5", train.records, train.meta.num_classes)
    root = ["--root", str(synth_root), "--split", "train"]
    return {
        "train-cls": ["train-cls", *root, "--out", str(tmp_path / "cls"), "--backbone", "deit_t"],
        "gen-seeds": ["gen-seeds", *root, "--ckpt", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "seeds")],
        "refine-psa": ["refine-psa", *root, "--seeds", str(seeds), "--out", str(tmp_path / "masks"), "--backbone", "resnet18", "--crop", "64"],
        "train-seg": ["train-seg", *root, "--masks", str(tmp_path / "no-masks"), "--out", str(tmp_path / "seg")],
        "predict-seg": ["predict-seg", *root, "--ckpt", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "preds")],
    }


@pytest.mark.parametrize("stage", ["train-cls", "gen-seeds", "refine-psa", "train-seg", "predict-seg"])
def test_every_stage_refuses_a_bad_device_first_in_one_line(stage, synth_root, tmp_path):
    args = _cli_cases(synth_root, tmp_path)[stage]
    for bad in ("gpu", "cuda:7"):
        res = CliRunner().invoke(app, [*args, "--device", bad, "--quiet"])
        assert res.exit_code == 2, res.output
        assert "--device" in res.output and "Traceback" not in res.output
        assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "masks" / "confident").exists()  # refine-psa: before its CRF step


def test_process_group_gets_the_timeout(monkeypatch):
    import torch.distributed as dist

    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: seen.update(kw))
    init_distributed("cpu", 90.0)
    assert seen == {"backend": "gloo", "timeout": timedelta(minutes=90)}


def test_timeout_defaults_agree():
    """One default (runtime.py), shown by every command that takes --timeout and used by the loop."""
    import inspect

    from usage_cli.commands import COMMANDS
    from usage_cli.engine.loop import LoopConfig
    from usage_cli.runtime import DEFAULTS, OPTIONS

    takes = [stage for stage, options in OPTIONS.items() if "timeout" in options]
    assert DEFAULTS.timeout == DEFAULT_TIMEOUT_MIN >= 30 and LoopConfig.__dataclass_fields__["timeout"].default == DEFAULT_TIMEOUT_MIN
    assert len(takes) >= 8 and all(inspect.signature(COMMANDS[c]).parameters["timeout"].default == DEFAULT_TIMEOUT_MIN for c in takes)


# ---------------------------------------------------------------- checkpoints written on another device


def test_checkpoint_of_a_module_on_another_device_loads_on_the_cpu(tmp_path, monkeypatch):
    """The meta device stands in for a GPU: save_checkpoint must copy every tensor to the CPU. A meta
    tensor has no data, so its copy is zeros here; what matters is that the copy is asked for."""
    from usage_cli.artifacts.checkpoint import save_checkpoint
    from usage_cli.models.classifier import build_classifier

    net = build_classifier({"backbone": "resnet18", "num_classes": 3, "img_size": 32})
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(2, 3, 32, 32)).get("logits").sum().backward()
    opt.step()
    state = {"model": net.to("meta").state_dict(), "optimizer": opt.state_dict(), "nested": [(torch.ones(2, device="meta"),)]}
    cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: torch.zeros(self.shape, dtype=self.dtype) if self.is_meta else cpu(self, *a, **k))
    save_checkpoint(tmp_path / "ckpt.pt", state)
    monkeypatch.undo()
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)  # no map_location, as docs/train-cls.md says
    tensors = [*loaded["model"].values(), *(t for s in loaded["optimizer"]["state"].values() for t in s.values() if torch.is_tensor(t)), loaded["nested"][0][0]]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    assert loaded["model"].keys() == state["model"].keys() and hasattr(loaded["model"], "_metadata")


def test_train_cls_publishes_cpu_tensors_from_a_network_elsewhere(synth_root, tmp_path, monkeypatch):
    from usage_cli.artifacts import cls_checkpoint
    from usage_cli.stages import train_cls

    saved = {}
    monkeypatch.setattr(cls_checkpoint, "save_checkpoint", lambda path, state: saved.update(state) or path)
    monkeypatch.setattr(train_cls, "write_manifest", lambda *a, **k: None)
    from usage_cli.artifacts.checkpoint import to_cpu
    from usage_cli.data import load_dataset

    task = _cls_task("none").to("meta")
    cfg = train_cls.TrainClsConfig(dataset="voc", root=synth_root, out=tmp_path, split="train", seed_network="student")
    train_cls._publish(cfg, task, {}, load_dataset("voc", synth_root, "train"), {})
    assert all(t.is_meta for t in saved["model"].values())  # what the stage hands over ...
    cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: torch.zeros(self.shape, dtype=self.dtype) if self.is_meta else cpu(self, *a, **k))
    assert all(t.device.type == "cpu" for t in to_cpu(saved)["model"].values())  # ... save_checkpoint writes on the CPU


# ---------------------------------------------------------------- the data loader under several processes


class _Draws(torch.utils.data.Dataset):
    """Each item: the index and a draw of torch's and numpy's random streams (as augmentations make)."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        return {"i": torch.tensor(i), "draw": torch.cat([torch.rand(1), torch.from_numpy(np.random.rand(1)).float()])}


def _draws(workers: int, rank: int, epochs, world: int = 2, seed: int = 0):
    from usage_cli.engine.loop import LoopConfig
    from usage_cli.engine.sampling import epoch_loaders

    cfg = LoopConfig(epochs=3, batch_size=2, lr=0.1, workers=workers, seed=seed)
    loaders = epoch_loaders(_Draws(), cfg, DistInfo(rank=rank, world_size=world), None, pin_memory=False)
    out = {}
    for e in epochs:
        out[e] = torch.cat([b["draw"] for b in loaders(e)])
    return out, loaders


def test_workers_draw_per_rank_and_epoch_and_a_resumed_run_draws_the_same():
    r0, loaders = _draws(2, rank=0, epochs=[0, 1])
    r1, _ = _draws(2, rank=1, epochs=[0, 1])
    assert not torch.equal(r0[0], r1[0]), "both ranks drew the same augmentations"
    assert not torch.equal(r0[0], r0[1]), "epochs drew the same augmentations"
    resumed, _ = _draws(2, rank=0, epochs=[1])  # a run resumed at epoch 1
    assert torch.equal(resumed[1], r0[1])
    assert loaders(0) is loaders(1)  # one loader: its worker processes live across epochs
    assert loaders(0).persistent_workers


def test_loader_without_workers_is_unchanged_and_pins_memory_only_for_cuda():
    """The loop's one loader path draws, without workers, what torch's DataLoader(shuffle=True) with a
    (seed, epoch) generator drew before the two paths became one: the same batches, the same items."""
    from torch.utils.data import DataLoader

    from usage_cli.engine.loop import LoopConfig
    from usage_cli.engine.sampling import epoch_loaders, seed_everything

    cfg = LoopConfig(epochs=1, batch_size=4, lr=0.1, seed=3)
    one = DistInfo()
    for epoch in (0, 3):
        seed_everything(epoch)
        a = list(epoch_loaders(_Draws(), cfg, one, None, pin_memory=False)(epoch))
        seed_everything(epoch)
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        b = list(DataLoader(_Draws(), batch_size=4, shuffle=True, drop_last=True, generator=g))
        assert len(a) == len(b) == 3
        assert all(torch.equal(x["i"], y["i"]) and torch.equal(x["draw"], y["draw"]) for x, y in zip(a, b, strict=True))
    assert epoch_loaders(_Draws(), cfg, one, None, pin_memory=True)(0).pin_memory


def test_deit_learning_rate_follows_the_global_batch(monkeypatch):
    from usage_cli.stages.train_cls import TrainClsConfig, resolve

    cfg = TrainClsConfig(dataset="voc", root=".", out=".", batch_size=64, pretrained=False)
    assert resolve(cfg, "transformer").lr == pytest.approx(5e-4 * 64 / 512)
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert resolve(cfg, "transformer").lr == pytest.approx(5e-4 * 64 * 8 / 512)
    assert resolve(replace(cfg, lr=1e-3), "transformer").lr == 1e-3  # an explicit --lr is kept


def test_workers_default_by_device(monkeypatch):
    from usage_cli.engine.distributed import default_workers

    assert default_workers("cpu") == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert 1 <= default_workers("cuda") <= 4 and default_workers("auto") == default_workers("cuda")


# ---------------------------------------------------------------- pieces DDP needs


def test_oaa_accumulation_is_not_a_buffer_ddp_would_broadcast_but_is_saved():
    task = _cls_task("oaa")
    assert "oaa_acc" not in dict(task.named_buffers())
    task(_cls_batch())
    assert task.oaa_acc[[0, 3]].amax() > 0 and task.oaa_acc[[1, 2]].amax() == 0
    other = _cls_task("oaa")
    other.load_state_dict(task.state_dict())
    assert torch.equal(other.oaa_acc, task.oaa_acc)


def test_sync_bn_converts_batchnorm_under_several_processes_and_refuses_the_cpu():
    from usage_cli.engine.loop import sync_batchnorm

    task = _cls_task("none", backbone="resnet18")
    keys = set(task.state_dict())
    assert sync_batchnorm(task, True, DistInfo(), torch.device("cpu")) is task  # one process: nothing to sync
    with pytest.raises(ConfigError, match="--sync-bn needs CUDA"):
        sync_batchnorm(task, True, DistInfo(rank=0, world_size=2), torch.device("cpu"))
    converted = sync_batchnorm(task, True, DistInfo(rank=0, world_size=2), torch.device("cuda"))
    bns = [m for m in converted.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(isinstance(m, torch.nn.SyncBatchNorm) for m in bns)
    assert set(converted.state_dict()) == keys  # checkpoints keep BatchNorm's keys


def test_affinitynet_transformer_freezes_only_what_its_forward_never_uses():
    from usage_cli.models.affinitynet import build_affinitynet

    net = build_affinitynet({"backbone": "deit_t", "img_size": 32})
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {"body.norm.weight", "body.norm.bias"}
    assert {id(p) for p in net.backbone_parameters()}.isdisjoint({id(p) for n, p in net.named_parameters() if n in frozen})
    assert "body.norm.weight" in net.state_dict()  # checkpoints keep their keys


def test_ema_update_in_one_call_equals_the_per_tensor_loop():
    import copy

    from usage_cli.engine.ema import ema_update

    student = _cls_task("none", backbone="resnet18").student
    student(torch.randn(2, 3, 32, 32))
    teacher, reference = copy.deepcopy(student), copy.deepcopy(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    student(torch.randn(2, 3, 32, 32))  # new BatchNorm statistics
    with torch.no_grad():
        for t, s in zip(reference.parameters(), student.parameters(), strict=True):
            t.mul_(0.9).add_(s, alpha=0.1)
        for t, s in zip(reference.buffers(), student.buffers(), strict=True):
            t.copy_(s)
    ema_update(teacher, student, 0.9)
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), reference.state_dict().values(), strict=True))


# ---------------------------------------------------------------- inference paths


def test_keeping_queries_and_keys_leaves_the_forward_as_it_is():
    from usage_cli.models.classifier import build_classifier

    torch.manual_seed(0)
    x = torch.randn(2, 3, 48, 32)
    net = build_classifier({"backbone": "deit_t", "num_classes": 3, "img_size": 48}).eval()
    plain, kept = net(x), net(x, keep_qk=4)
    assert "qk" not in plain and len(kept["qk"]) == 4
    torch.testing.assert_close(kept["cams"], plain["cams"], atol=0, rtol=0)  # the same fused blocks run
    mct = build_classifier({"backbone": "deit_t", "num_classes": 3, "mapping": "mct", "img_size": 48}).eval()
    train_out, seed_out = mct(x), mct(x, cls_attn=True)
    assert "cls_attn" not in train_out and "qk" not in train_out  # training keeps nothing
    torch.testing.assert_close(train_out["logits"], seed_out["logits"], atol=0, rtol=0)
    assert seed_out["cls_attn"].shape == (2, 3, 3, 2) and "qk" not in seed_out  # the 3 layers it needed, not handed out
    assert len(mct(x, keep_qk=12, cls_attn=True)["qk"]) == 12


def test_gen_seeds_bf16_autocast_keeps_the_maps(tmp_path):
    from usage_cli.algorithms.cam_infer import CamInference, views_to_maps
    from usage_cli.models.classifier import build_classifier

    torch.manual_seed(0)
    net = build_classifier({"backbone": "deit_t", "num_classes": 3, "img_size": 32}).eval()
    images = torch.randint(0, 256, (1, 48, 64, 3), dtype=torch.uint8)
    cfg = CamInference(scales=(1.0, 0.5), refine="patch-affinity", source="cam", affinity_layers=4)
    fp32 = views_to_maps(net, images, cfg)[0]
    bf16 = views_to_maps(net, images, replace(cfg, amp=True))[0]
    assert bf16.dtype == torch.float32
    assert (bf16 - fp32).abs().max() <= 0.05 * fp32.abs().max()


def test_labels_are_taken_where_the_probabilities_are():
    from usage_cli.algorithms.seg_infer import to_label

    probs = torch.rand(5, 7, 9)
    label = to_label(probs)
    assert label.dtype == np.uint8 and np.array_equal(label, probs.numpy().argmax(0).astype(np.uint8))
