"""The USAGE classifier task: generation loss (mapping) + lambda * regulariser (aa / gt / oaa).

With ``reg = "aa"`` the student and an EMA teacher are the same network with different drop-path /
dropout rates; the student's rates move from their start to their end value as the schedule says
(self-adaptive: by the learning status; linear: by training progress; fixed: at the end value).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from usage_cli.engine.distributed import all_reduce_max, all_reduce_sum, current_info
from usage_cli.engine.ema import ema_momentum, ema_update
from usage_cli.losses.generation import classification_loss
from usage_cli.losses.regularization import (
    LearningStatus,
    aa_loss,
    adjustment_fraction,
    gt_loss,
    interpolate_rate,
    normalise_cam,
    oaa_loss,
    oaa_update,
)
from usage_cli.metrics.activation import aa_agreement, map_diagnostics
from usage_cli.metrics.multilabel import multilabel_metrics
from usage_cli.models.adjust import set_adjustment, stochastic_eval
from usage_cli.models.classifier import Classifier

REGULARISERS = ("none", "aa", "gt", "oaa")


@dataclass(frozen=True)
class ClsTaskConfig:
    reg: str = "aa"
    lam: float = 0.25
    tau2: float = 0.1
    ema: float = 0.99
    ema_warmup: bool = True
    aa_schedule: str = "self-adaptive"
    aa_classes: str = "all"  # "all": C+1 channels in Eq. 9; "present": the image's classes + background
    teacher_drop_path: float = 0.05
    teacher_dropout: float = 0.0
    student_drop_path: tuple[float, float] = (0.05, 0.15)
    student_dropout: tuple[float, float] = (0.0, 0.01)
    status_momentum: float = 0.999
    gt_scale: float = 0.75
    num_images: int = 0  # for oaa's per-image accumulation


class ClassificationTask(nn.Module):
    def __init__(self, student: Classifier, cfg: ClsTaskConfig):
        super().__init__()
        self.cfg = cfg
        self.student = student
        self.status = LearningStatus(student.num_classes, cfg.status_momentum, reduce=all_reduce_sum)
        self.teacher = None
        self.progress = 0.0
        if cfg.reg == "aa":
            self.teacher = copy.deepcopy(student)
            for p in self.teacher.parameters():
                p.requires_grad_(False)
            set_adjustment(self.teacher, cfg.teacher_drop_path, cfg.teacher_dropout)
            set_adjustment(self.student, cfg.student_drop_path[0], cfg.student_dropout[0])
        if cfg.reg == "oaa":
            # not a module buffer: DDP would broadcast rank 0's copy over every other rank's at each
            # forward. Each rank keeps its own images' maps; on_epoch_end merges them (element-wise max)
            h = w = student.model_config["img_size"] // student.backbone.stride
            self.oaa_acc = torch.zeros(cfg.num_images, student.num_classes, h, w)
        self._scores = self._targets = None

    # -- the loss ---------------------------------------------------------------------------
    def forward(self, batch: dict) -> dict:
        x, y = batch["image"], batch["label"]
        out = self.student(x)
        loss_cls = classification_loss(out["logits"], y)
        if "patch_logits" in out:  # mct: class-token scores + patch-CAM scores (MCTformer-V2)
            loss_cls = loss_cls + classification_loss(out["patch_logits"], y)
        self._scores, self._targets = out["logits"].detach(), y.detach()
        parts = {"loss_cls": loss_cls}
        if self.cfg.reg != "none":
            parts["loss_reg"] = self._regulariser(x, y, out["cams"], batch, parts)
        loss = loss_cls + self.cfg.lam * parts.get("loss_reg", 0.0)
        mc = self.student.model_config
        parts.update(map_diagnostics(out["cams"], y, self.student.mapping_spec.tau(mc["tau1"]), mc["bg_const"]))
        return {"loss": loss, **parts}

    def _regulariser(self, x, y, z, batch, parts: dict) -> torch.Tensor:
        cfg = self.cfg
        if cfg.reg == "aa":
            bg = self.student.model_config["bg_const"]
            with torch.no_grad():
                stochastic_eval(self.teacher)
                z_t = self.teacher(x)["cams"]
            parts.update(aa_agreement(z, z_t, cfg.tau2, bg))
            return aa_loss(z, z_t, cfg.tau2, bg, present=y if cfg.aa_classes == "present" else None)
        if cfg.reg == "gt":
            size = [max(self.student.backbone.stride, int(round(s * cfg.gt_scale / self.student.backbone.stride)) * self.student.backbone.stride) for s in x.shape[-2:]]
            view = F.interpolate(x, size=size, mode="bilinear", align_corners=False).flip(-1)
            return gt_loss(z, self.student(view)["cams"], flip=True)
        # oaa: accumulate in the image frame (undo the flip), pull the maps towards the accumulation
        idx, flip = batch["index"], batch["flip"]
        cam = normalise_cam(z.detach())
        cam = torch.where(flip[:, None, None, None], cam.flip(-1), cam)
        if self.oaa_acc.device != cam.device:
            self.oaa_acc = self.oaa_acc.to(cam.device)
        acc = oaa_update(self.oaa_acc[idx], cam * y[..., None, None])
        self.oaa_acc[idx] = acc
        target = torch.where(flip[:, None, None, None], acc.flip(-1), acc)
        return oaa_loss(z, target, y)

    # -- hooks for the loop -----------------------------------------------------------------
    def on_step_end(self, step: int, total_steps: int) -> None:
        self.progress = step / max(total_steps, 1)
        if self._scores is not None:
            self.status.update(self._scores, self._targets)
        if self.teacher is None:
            return
        ema_update(self.teacher, self.student, ema_momentum(self.cfg.ema, step, self.cfg.ema_warmup))
        dp, do = self.student_rates()
        set_adjustment(self.student, dp, do)

    def on_epoch_end(self) -> None:
        """OAA: merge the ranks' accumulations (element-wise max, as the accumulation itself; within an
        epoch each image is seen by one rank only)."""
        if self.cfg.reg == "oaa":
            all_reduce_max(self.oaa_acc)

    def student_rates(self) -> tuple[float, float]:
        # the status is read (a host sync) only where the self-adaptive schedule needs it
        status = self.status.fraction() if self.cfg.aa_schedule == "self-adaptive" else 0.0
        f = adjustment_fraction(self.cfg.aa_schedule, status, self.progress)
        return (
            interpolate_rate(*self.cfg.student_drop_path, f),
            interpolate_rate(*self.cfg.student_dropout, f),
        )

    def epoch_log(self) -> dict:
        logs = {"learning_status": self.status.value, "learning_fraction": self.status.fraction()}
        if self.teacher is not None:
            dp, do = self.student_rates()
            logs.update(student_drop_path=dp, student_dropout=do, teacher_drop_path=self.cfg.teacher_drop_path,
                        teacher_dropout=self.cfg.teacher_dropout)  # fmt: skip
        return logs

    def seed_network(self, which: str) -> Classifier:
        return self.teacher if which == "teacher" and self.teacher is not None else self.student

    def get_extra_state(self) -> dict:
        state = {"status": self.status.state_dict(), "progress": self.progress}
        if self.cfg.reg == "oaa":
            state["oaa_acc"] = self.oaa_acc
        return state

    def set_extra_state(self, state: dict) -> None:
        self.status.load_state_dict(state["status"])
        self.progress = float(state["progress"])
        if self.cfg.reg == "oaa" and "oaa_acc" in state:
            self.oaa_acc = state["oaa_acc"].to(next(self.student.parameters()).device)
        if self.teacher is not None:
            set_adjustment(self.student, *self.student_rates())


def val_evaluator(val_set, num_classes: int, seed_network: str, batch_size: int, workers: int):
    """``evaluate(task, epoch)`` for the loop: the mAP and F1 (threshold 0.5) of the multi-label
    classifier on ``val_set`` (items ``{"image", "label"}``). Run by every rank on its share of the
    images (every world_size-th); scores and labels are summed over the ranks into one table, so no
    rank waits while another works alone."""

    @torch.no_grad()
    def evaluate(task, epoch: int) -> dict:
        info = current_info()
        net = task.seed_network(seed_network)
        was = net.training
        net.eval()
        device = next(net.parameters()).device
        mine = list(range(info.rank, len(val_set), info.world_size))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(val_set, mine), batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda"
        )
        rows = []
        for batch in loader:
            scores = torch.sigmoid(net(batch["image"].to(device, non_blocking=True))["logits"].float())
            rows.append(torch.cat([scores, batch["label"].to(device, scores.dtype)], 1))
        net.train(was)
        table = torch.zeros(len(val_set), 2 * num_classes, device=device)
        if rows:
            table[torch.as_tensor(mine, device=device)] = torch.cat(rows)
        table = all_reduce_sum(table).cpu().numpy()
        return {f"val_{k}": v for k, v in multilabel_metrics(table[:, :num_classes], table[:, num_classes:]).items()}

    return evaluate
