"""``--tensorboard``: the loop's per-epoch log also as TensorBoard event files (``OUT/tensorboard/``).

TensorBoard is an optional dependency (the ``tensorboard`` extra); ``runtime.runtime_checks`` refuses
``--tensorboard`` without it before any work, with the line that says how to install it. One scalar
per figure of ``log.jsonl``, at step = the epoch (1-based, as the report draws it). A resumed run
purges the events of the epochs it redoes, so its curves continue as one line, as ``log.jsonl`` does.
"""

from __future__ import annotations

import math
from pathlib import Path

from usage_cli.artifacts.last_checkpoint import tensorboard_dir


class EventLog:
    """Writes each epoch's figures as scalars; ``start_epoch``: the first epoch this process trains."""

    def __init__(self, out_dir: Path, start_epoch: int = 0):
        from torch.utils.tensorboard import SummaryWriter  # optional: only with --tensorboard

        self.writer = SummaryWriter(str(tensorboard_dir(out_dir)), purge_step=start_epoch + 1 if start_epoch else None)

    def write(self, logs: dict) -> None:
        step = int(logs["epoch"]) + 1
        for key, value in logs.items():
            if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
