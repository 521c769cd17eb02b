"""The shared trainer: optimizer, backward, weight averaging, evaluation, checkpoints and resume.

Methods only define their loss and their stages; everything here is the same for all of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from cache.errors import InvalidOption, UserError
from common.devices import resolve_device

from .averaging import NoAveraging, State, apply_average, averager, snapshot
from .config import TrainConfig
from .data import LoadedBatch, Normalize, Replay, Sample, Splits, eval_loader, train_loader
from .distributed import SINGLE, Ranks
from .knowledge import TeacherKnowledge
from .methods.base import Hparams, Method, Stage
from .state_file import StateFileError, load_state, save_state

log = logging.getLogger("vl2v.distill")

CHECKPOINT = "checkpoint.safetensors"
PICKLED_CHECKPOINT = "checkpoint.pt"  # before vl2v stored training state as data
EVAL_CACHE_BYTES = 2 << 30  # decoded evaluation images kept in memory (uint8) up to this size
RESULTS = "results.jsonl"


@dataclass
class Progress:
    """Where a run is, for a live display: what it does, how fast, and what it last measured.

    `event` is "step" (a training step ended), "evaluating" (an evaluation is under way: `evaluated` says how
    far), or "evaluated" (an evaluation ended: `source_val_acc` is new). The final model's evaluation has stage
    "final" and `step` = `steps`.
    """

    stage: str
    stage_index: int  # 1-based
    stages: int
    step: int  # steps done in this stage
    steps: int  # steps per stage
    losses: dict[str, float]
    source_val_acc: float | None  # of the latest evaluation
    images_per_s: float
    eta_s: float | None  # the whole run
    event: str = "step"
    evaluated: tuple[int, int] | None = None  # (images, total) during an evaluation
    target_acc: float | None = None  # the final model's
    phase: str | None = None  # within a stage, where a method's stage has phases (SCMD's hard samples first)


class TrainingDiverged(UserError):
    """The loss stopped being a number: the run stops rather than report a broken model as accurate."""

    def __init__(self, method: str, stage: str, step: int, parts: dict[str, Tensor]) -> None:
        values = ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in parts.items())
        super().__init__(
            f"{method} diverged at step {step + 1} of stage '{stage}' ({values}); nothing was saved as final. "
            "Lower the learning rate (--lr or --set lr=...) and start again with --overwrite"
        )


class Trainer:
    """Trains one method on one (test domain, trial) split and writes its records and checkpoints to `run_dir`."""

    def __init__(
        self,
        method: Method,
        knowledge: TeacherKnowledge,
        splits: Splits,
        root: Path,
        transforms: tuple,
        config: TrainConfig,
        run_dir: Path,
        record_base: dict,
        on_progress: Callable[[Progress], None] = lambda p: None,
        ranks: Ranks = SINGLE,
    ) -> None:
        self.method, self.knowledge, self.splits, self.root = method, knowledge, splits, root
        self.train_transform, self.eval_transform = transforms
        self.config, self.run_dir, self.record_base = config, run_dir, record_base
        self.ranks = ranks
        self.on_progress = on_progress if ranks.leader else lambda p: None
        # The source domains' images without a class, for a method that learns from the teacher's answer alone.
        used = method.learns_unlabelled and config.unlabelled_per_step > 0
        self.unlabelled = splits.unlabelled_set() if used else []
        extra = config.unlabelled_per_step if self.unlabelled else 0
        global_batch = config.batch_size * len(splits.sources) + extra
        if global_batch % ranks.world:
            raise InvalidOption(
                f"a step's {global_batch} images (--batch-size {config.batch_size} x {len(splits.sources)} source "
                f"domains{f' + {extra} unlabelled' if extra else ''}) do not split evenly over {ranks.world} processes"
            )
        self.unreadable: set[str] = set()  # files no loader could read, by path
        self._version = 0  # weight updates so far
        self._evaluated: tuple[int, dict] = (-1, {})  # the last evaluation, and at which version
        self._where = Progress("", 0, len(method.stages()), 0, config.steps, {}, None, 0.0, None)
        self.device = resolve_device(config.device)
        # Channels-last convolutions: faster on GPUs and on CPUs too (the demo's student on 2 CPU cores trains 2.3x
        # as fast as in the contiguous layout: `bench/train.py --layouts`).
        self.method.to(self.device).to(memory_format=torch.channels_last)
        ranks.broadcast_state(self.method)  # every rank starts from rank 0's weights
        self.normalize = Normalize(method.backbone.mean, method.backbone.std)
        self.evaluation = EvaluationSet(splits, root, self.eval_transform, config) if ranks.leader else None

    # -- the loop ---------------------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> dict | None:
        """Run every stage, then evaluate the final weights; returns the final record (None on ranks but 0)."""
        stages = self.method.stages()
        start_stage, start_step, saved = 0, 0, None
        if self.ranks.leader:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ranks.barrier()
        if resume:
            saved = self._resume_state()
        if saved is not None:
            start_stage, start_step = saved["stage"], saved["step"]
            if self.ranks.leader:
                _truncate(self.run_dir / RESULTS, saved["records"])
        elif self.ranks.leader and (self.run_dir / RESULTS).exists():
            (self.run_dir / RESULTS).unlink()
        for index in range(start_stage, len(stages)):
            self._run_stage(
                index, stages[index], start_step if index == start_stage else 0, saved if index == start_stage else None
            )
            saved = None
        self._where.stage, self._where.step = "final", self.config.steps
        if not self.ranks.leader:
            return None
        return self._record("final", self.config.steps * len(stages), {}, final=True)

    def _resume_state(self) -> dict | None:
        """The last checkpoint, loaded into the model: None when the run never reached one.

        Raises:
            StateFileError: the checkpoint is truncated, tampered with, from another version of vl2v, or for
                another model; one line naming the file.
        """
        path = self.run_dir / CHECKPOINT
        if not path.is_file():
            if (self.run_dir / PICKLED_CHECKPOINT).is_file():
                raise StateFileError(
                    self.run_dir / PICKLED_CHECKPOINT,
                    "a checkpoint of an older vl2v, stored as a pickle, which vl2v does not load (unpickling a file "
                    "can run any code in it); start this run again with --overwrite",
                )
            return None
        saved = load_state(path)
        with _foreign_state(path):
            self.method.load_state_dict(saved["model"])
            if not all(isinstance(saved[k], int) for k in ("stage", "step", "records")):
                raise TypeError("stage, step and records must be integers")
        self._weights_changed()
        return saved

    def _run_stage(self, index: int, stage: Stage, start: int, saved: dict | None) -> None:
        trainable = {id(p) for group in stage.param_groups for p in group["params"]}
        for p in self.method.parameters():
            p.requires_grad_(id(p) in trainable)
        optimizer = self._optimizer(stage)
        averaging = averager(stage.averaging, self.method.hparams)
        best: tuple[float, State | None] = (-math.inf, None)
        if saved is not None:
            with _foreign_state(self.run_dir / CHECKPOINT):
                optimizer.load_state_dict(saved["optimizer"])
                averaging.load_state_dict(saved["averager"])
                best = saved["best"]
        train_sets = self.splits.train_sets()
        loader, flat = train_loader(
            self.root,
            train_sets,
            self.train_transform,
            self.config.batch_size,
            seed=self._seed(index),
            start=start,
            end=self.config.steps,
            workers=self.config.workers,
            replay=Replay(self.knowledge.view_params, self.method.backbone.image_size),
            share=self.ranks.share,
            unlabelled=self.unlabelled,
            unlabelled_per_step=self.config.unlabelled_per_step,
        )
        rows = embedding_rows(self.knowledge.index, flat)
        scaler, autocast = self._amp()
        started, seen = time.perf_counter(), 0
        losses: dict[str, float] = {}
        self._where.stage, self._where.stage_index = stage.name, index + 1
        self.method.train()
        trained = [p for group in stage.param_groups for p in group["params"]]
        for step, loaded in enumerate(loader, start=start):
            self._note_unreadable(flat, loaded.unreadable)
            if loaded.images is None and not self.ranks.distributed:
                continue  # not one image of this step could be read: it trains nothing
            self._set_lr(optimizer, step)
            torch.manual_seed(self._seed(index) * 1_000_003 + step)  # dropout etc.: a function of the step
            optimizer.zero_grad(set_to_none=True)
            if loaded.images is not None:
                # The embedding of exactly the view the student sees; the clean image's when it shows a random one.
                teacher_rows = torch.where(loaded.views >= 0, loaded.views, rows[loaded.indices])
                batch = self._batch(loaded.images, loaded.labels, teacher_rows, step)
                with autocast():
                    parts = self.method.loss(batch)
                if not torch.isfinite(parts["loss"]):
                    raise TrainingDiverged(self.method.name, stage.name, step, parts)
                scaler.scale(parts["loss"]).backward()
            self.ranks.average_gradients(trained)  # every rank takes part, whatever its share held
            scaler.step(optimizer)
            self._weights_changed()
            scaler.update()
            if self.ranks.leader:
                averaging.after_step(self.method, step)
            mine = {k: float(v.detach()) for k, v in parts.items()} if loaded.images is not None else None
            losses = self.ranks.mean(mine, len(loaded.indices)) or losses
            done, seen = step + 1, seen + len(loaded.indices) * self.ranks.world
            elapsed = time.perf_counter() - started
            left = self.config.steps - done + self.config.steps * (len(self.method.stages()) - index - 1)
            self._report(
                "step",
                step=done,
                losses=losses,
                images_per_s=seen / max(elapsed, 1e-9),
                eta_s=elapsed / (done - start) * left,
                phase=self.method.phase(step, self.config.steps),
            )
            evaluation_due = done % self.config.eval_every == 0 or done == self.config.steps
            if evaluation_due and self.ranks.leader:  # the others train on: the next all-reduce waits for it
                record = self._record(stage.name, self.config.steps * index + done, losses)
                averaging.after_eval(self.method, done, record["source_val_loss"])
                if record["source_val_acc"] > best[0]:
                    best = (record["source_val_acc"], snapshot(self.method))
                self._checkpoint(index, done, optimizer, averaging, best)
                self.method.train()
        if self.ranks.leader:
            if stage.restore_best and best[1] is not None:
                apply_average(self.method, best[1])
                self._weights_changed()
            elif not isinstance(averaging, NoAveraging):
                apply_average(self.method, averaging.averaged(self.method))
                self._weights_changed()
            self.averaging_summary = averaging.summary()
            self._checkpoint(index + 1, 0, None, None, (-math.inf, None))
        self.ranks.broadcast_state(self.method)  # the next stage starts from rank 0's chosen weights everywhere

    def _report(self, event: str, **changes: object) -> None:
        for name, value in changes.items():
            setattr(self._where, name, value)
        self._where.event = event
        self.on_progress(dataclasses.replace(self._where))

    def _note_unreadable(self, samples: list[Sample], indices: list[int]) -> None:
        new = {samples[i].path for i in indices} - self.unreadable
        if new:
            self.unreadable |= new
            log.warning(
                "%d image(s) cannot be read and are left out (%d so far, e.g. %s)",
                len(new),
                len(self.unreadable),
                ", ".join(sorted(new)[:3]),
            )

    def _batch(self, images: Tensor, labels: Tensor, rows: Tensor, step: int) -> dict[str, Tensor]:
        non_blocking = self.device.type == "cuda"
        return {
            "images": model_input(images, self.normalize, self.device),
            "labels": labels.to(self.device, non_blocking=non_blocking),
            # Teacher tensors: looked up in memory, never part of the graph.
            "teacher_image": self.knowledge.image_embeddings[rows].to(self.device).detach(),
            "progress": torch.tensor(step / self.config.steps),
        }

    def _optimizer(self, stage: Stage) -> torch.optim.Optimizer:
        h = self.method.hparams
        groups = [dict(g) for g in stage.param_groups]
        for group in groups:
            group.setdefault("lr", h.lr)
            group["initial_lr"] = group["lr"]
        if h.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay)
        return torch.optim.Adam(groups, lr=h.lr, weight_decay=h.weight_decay)

    def _set_lr(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        factor = lr_factor(self.method.hparams, step, self.config.steps)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def _amp(self) -> tuple[torch.amp.GradScaler, Callable[[], contextlib.AbstractContextManager]]:
        return mixed_precision(self.device, self.config.amp)

    def _seed(self, stage_index: int) -> int:
        return self.config.seed * 100 + stage_index

    # -- evaluation and records ------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Accuracy of every domain's in and out split; loss and accuracy on the source `out` splits."""
        evaluation = self.evaluation
        if evaluation is None:
            raise RuntimeError("only rank 0 evaluates")
        self.method.eval()
        _, autocast = self._amp()
        correct = torch.zeros(len(evaluation.groups), dtype=torch.long)
        counted = torch.zeros_like(correct)
        val_loss, val_count = 0.0, 0
        done, total = 0, len(evaluation.samples)
        for loaded in evaluation.batches():
            self._note_unreadable(evaluation.samples, loaded.unreadable)
            done += len(loaded.indices) + len(loaded.unreadable)
            self._report("evaluating", evaluated=(done, total))
            if loaded.images is None:
                continue
            images = model_input(loaded.images, self.normalize, self.device)
            labels = loaded.labels.to(self.device)
            with autocast():
                logits = self.method.predict(images).float()
            groups = evaluation.group_of[loaded.indices]
            hits = (logits.argmax(1) == labels).cpu().long()
            correct.index_add_(0, groups, hits)
            counted.index_add_(0, groups, torch.ones_like(hits))
            validation = evaluation.is_validation[loaded.indices].to(self.device)
            if validation.any():
                val_loss += float(F.cross_entropy(logits[validation], labels[validation], reduction="sum"))
                val_count += int(validation.sum())
        out: dict = {}
        for g, (d, part) in enumerate(evaluation.groups):
            out[f"env{d}_{part}_acc"] = int(correct[g]) / max(int(counted[g]), 1)
            out[f"env{d}_{part}_count"] = int(counted[g])
        sources = self.splits.sources
        out["source_val_acc"] = sum(out[f"env{d}_out_acc"] for d in sources) / len(sources)
        out["source_val_loss"] = val_loss / max(val_count, 1)
        t = self.splits.test_domain
        target_total = out[f"env{t}_in_count"] + out[f"env{t}_out_count"]
        out["target_acc"] = (
            out[f"env{t}_in_acc"] * out[f"env{t}_in_count"] + out[f"env{t}_out_acc"] * out[f"env{t}_out_count"]
        ) / max(target_total, 1)
        return out

    def _weights_changed(self) -> None:
        self._version += 1

    def _evaluation(self) -> dict:
        """`evaluate()`, or its last result when the weights have not changed since (the final record after a step
        that was just evaluated)."""
        if self._evaluated[0] != self._version:
            self._evaluated = (self._version, self.evaluate())
        return self._evaluated[1]

    def _record(self, stage: str, step: int, losses: dict, final: bool = False) -> dict:
        record = {
            **self.record_base,
            "stage": stage,
            "step": step,
            **self._evaluation(),
            **{f"loss_{k}": v for k, v in losses.items()},
        }
        if final:
            record["final"] = True
            record["averaging"] = getattr(self, "averaging_summary", {})
        with (self.run_dir / RESULTS).open("a") as f:
            f.write(json.dumps(record) + "\n")
        self._report(
            "evaluated",
            evaluated=None,
            source_val_acc=record["source_val_acc"],
            target_acc=record["target_acc"] if final else None,
        )
        return record

    def _checkpoint(self, stage: int, step: int, optimizer, averager, best) -> None:
        records = sum(1 for _ in (self.run_dir / RESULTS).open()) if (self.run_dir / RESULTS).exists() else 0
        state = {
            "stage": stage,
            "step": step,
            "model": self.method.state_dict(),
            "records": records,
            "optimizer": optimizer.state_dict() if optimizer else None,
            "averager": averager.state_dict() if averager else None,
            "best": best,
        }
        save_state(state, self.run_dir / CHECKPOINT)


class EvaluationSet:
    """Every domain's `in` and `out` images, read once: decoded uint8 pixels are kept in memory between
    evaluations when they fit in `EVAL_CACHE_BYTES` (evaluation then costs only the model), else re-read."""

    def __init__(self, splits: Splits, root: Path, transform, config: TrainConfig) -> None:
        self.groups = [(d, part) for d in splits.splits for part in ("in", "out")]
        self.samples: list[Sample] = []
        group_of, validation = [], []
        for g, (d, part) in enumerate(self.groups):
            members = splits.splits[d][0 if part == "in" else 1]
            self.samples += members
            group_of += [g] * len(members)
            validation += [part == "out" and d in splits.sources] * len(members)
        self.group_of = torch.tensor(group_of, dtype=torch.long)
        self.is_validation = torch.tensor(validation, dtype=torch.bool)
        self._loader = eval_loader(root, self.samples, transform, config.eval_batch_size, config.workers)
        self._kept: list[LoadedBatch] | None = None

    def batches(self) -> Iterator[LoadedBatch]:
        if self._kept is not None:
            yield from self._kept
            return
        kept: list[LoadedBatch] | None = []
        size = 0
        for loaded in self._loader:
            size += loaded.images.numel() if loaded.images is not None else 0
            if kept is not None:
                kept.append(loaded)
                kept = kept if size <= EVAL_CACHE_BYTES else None
            yield loaded
        self._kept = kept


def lr_factor(hparams: Hparams, step: int, steps: int) -> float:
    """The share of its initial lr that step `step` (0-based) of a stage of `steps` trains at."""
    warmup = int(hparams.warmup * steps)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if hparams.lr_schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))
    decay_at = hparams.lr_decay_at
    return 0.1 if decay_at is not None and step >= int(decay_at * steps) else 1.0


def model_input(images: Tensor, normalize: Normalize, device: torch.device) -> Tensor:
    """A loader's uint8 images as the student takes them: on `device`, normalised there, channels-last (the
    trainer keeps the student channels-last too)."""
    images = images.to(device, non_blocking=device.type == "cuda")
    return normalize(images).contiguous(memory_format=torch.channels_last)


def mixed_precision(
    device: torch.device, enabled: bool
) -> tuple[torch.amp.GradScaler, Callable[[], contextlib.AbstractContextManager]]:
    """(loss scaler, autocast context) for training on `device`: bf16 autocast where the GPU has bf16, fp16 with
    loss scaling where it does not; both no-ops on the CPU or when not `enabled`."""
    if device.type != "cuda" or not enabled:
        return torch.amp.GradScaler("cpu", enabled=False), contextlib.nullcontext
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    return scaler, lambda: torch.autocast("cuda", dtype=dtype)


def embedding_rows(index: dict[str, int], samples: list[Sample]) -> Tensor:
    """Each training sample's row in the cached embeddings (a split trains only on images the cache holds)."""
    rows = []
    for s in samples:
        if s.key is None:
            raise RuntimeError(f"{s.path} was drawn for training but has no cached embedding")
        rows.append(index[s.key])
    return torch.tensor(rows)


@contextlib.contextmanager
def _foreign_state(path: Path) -> Iterator[None]:
    """A checkpoint whose contents do not fit this run (another model, method or optimizer) as one line."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # RuntimeError: other tensor names or shapes
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StateFileError(path, f"not a checkpoint of this run ({type(e).__name__}: {reason[:200]})") from None


def _truncate(path: Path, lines: int) -> None:
    if path.exists():
        kept = path.read_text().splitlines(keepends=True)[:lines]
        path.write_text("".join(kept))
