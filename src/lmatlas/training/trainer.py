"""One trainer for every objective and fine-tuning task.

AdamW (no weight decay on biases and norms), linear warmup then cosine or linear decay,
gradient clipping and accumulation, bfloat16 autocast, evaluation every N steps with early
stopping on a dev metric, a progress line with the loss and tokens per second, a JSON Lines
log and a loss-curve PNG. Checkpoints are Hugging Face folders (config.json, safetensors,
tokenizer) plus ``trainer_state.pt`` (optimizer, schedule, random generators, data position),
written under a temporary name and renamed, so that a kill at any moment leaves either the
previous checkpoint or the new one, whole; ``resume`` continues exactly where one stopped.

What is trained is a ``Task``: the modules, how to draw a batch, the loss terms, the
evaluation and how to save. Loss terms are sums with counts known before the forward pass, so
the trainer divides by the count over the whole global batch: the same gradients whether a
batch is split over accumulation steps, over processes, or not at all.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import LmatlasError
from ..quantization import refuse_quantized
from . import distributed as dist_
from .checkpoints import (STATE_FILE, STATE_FORMAT, checkpoint_name, checkpoints, fresh_tmp, prune, publish, read_state,
                          rng_state, set_rng_state)
from .config import Schedule, TrainConfig, param_groups
from .distributed import Context
from .fields import FieldError
from .progress import Progress

LOWER_IS_BETTER = ("loss", "perplexity", "ppl")


class Task:
    """What the trainer trains (see the module docstring); subclasses fill in the methods."""

    name = "task"
    #: weights of the loss terms (term -> weight); the logged "loss" is the weighted sum of means
    weights: dict[str, float] = {"loss": 1.0}
    #: the evaluation metric that selects the best model and drives early stopping
    metric: str = "loss"
    module: nn.Module

    def next_batch(self, batch_size: int, ctx: Context) -> dict[str, Any]:
        """This process's share of the next global batch; ``batch["counts"]`` gives each loss
        term's number of items (labelled tokens, examples). ``{"skip": reason}`` instead: the
        step is logged as skipped, without an update (online training whose reward failed)."""
        raise NotImplementedError

    def loss_terms(self, module: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Summed loss of each term over the batch."""
        raise NotImplementedError

    def tokens(self, batch: dict[str, Any]) -> int:
        ids = batch.get("input_ids")
        if ids is None:
            return 0
        mask = batch.get("attention_mask")
        return int(mask.sum()) if mask is not None else ids.numel()

    def evaluate(self, module: nn.Module, ctx: Context) -> dict[str, float]:
        return {}

    def save(self, module: nn.Module, folder: Path) -> None:
        raise NotImplementedError

    def load(self, folder: Path) -> None:
        """Read the weights a checkpoint folder holds into ``self.module``."""
        raise NotImplementedError

    def signature(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed by this task."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


def better(metric: str, new: float, best: float | None) -> bool:
    if best is None:
        return True
    lower = any(metric.endswith(k) for k in LOWER_IS_BETTER)
    return new < best if lower else new > best


class Trainer:
    def __init__(self, task: Task, cfg: TrainConfig, ctx: Context | None = None):
        self.task, self.cfg = task, cfg
        self.ctx = ctx or Context()
        self.out = Path(cfg.out)
        self.metric = cfg.metric or task.metric
        self.step = 0
        self.best: float | None = None
        self.bad_evals = 0
        self.tokens_seen = 0
        self.elapsed = 0.0  # seconds of training before a resume
        self.history: list[dict[str, Any]] = []
        self.schedule = Schedule(cfg)
        self.log_path = self.out / "log.jsonl"

    # -- setup ------------------------------------------------------------------------------

    def _prepare(self) -> None:
        ctx, cfg = self.ctx, self.cfg
        if ctx.main:
            self.out.mkdir(parents=True, exist_ok=True)
        resume_from = self._resume_folder()
        if resume_from is None and checkpoints(self.out):
            raise FieldError(lambda f: f"{self.out} already holds the checkpoints of a run; continue it with "
                                       f"{f('resume')}, or give another {f('out')}")
        if resume_from is not None:
            self._check_compatible(resume_from)
            self.task.load(resume_from)
        refuse_quantized(self.task.module, "training")
        self.task.module.to(ctx.device)
        self.fsdp = cfg.fsdp and ctx.distributed
        # Under FSDP no process holds the whole model: the main one keeps a CPU copy to save.
        self.shadow = copy.deepcopy(self.task.module).cpu() if self.fsdp and ctx.main else None
        self.model = dist_.wrap(self.task.module, ctx, cfg.fsdp)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
            foreach=None,
        )
        if resume_from is not None:
            self._restore(resume_from)
        elif ctx.main and self.log_path.exists():
            self.log_path.unlink()  # a fresh run starts a fresh log
        dist_.barrier(ctx)

    def _resume_folder(self) -> Path | None:
        if not self.cfg.resume:
            return None
        if isinstance(self.cfg.resume, (str, os.PathLike)) and str(self.cfg.resume) not in ("", "True", "latest"):
            folder = Path(self.cfg.resume)
            if not (folder / STATE_FILE).is_file():
                raise LmatlasError(f"{folder}: not a training checkpoint (no {STATE_FILE})")
            return folder
        found = checkpoints(self.out)
        if not found:
            raise LmatlasError(f"{self.out}: no checkpoint to resume from")
        return found[-1]

    def _check_compatible(self, folder: Path) -> None:
        state = read_state(folder)
        if state.get("objective") != self.task.name:
            raise LmatlasError(
                f"{folder}: the checkpoint was written by {state.get('objective')!r} training, not {self.task.name!r}"
            )
        if bool(state.get("fsdp", False)) != bool(self.cfg.fsdp and self.ctx.distributed):
            how = "with" if state.get("fsdp") else "without"
            raise FieldError(lambda f: f"{folder}: the checkpoint was written {how} FSDP; resume it {how} "
                                       f"{f('fsdp')} under torchrun")
        theirs, ours = state.get("signature", {}), self.task.signature()
        for key in sorted(set(theirs) | set(ours)):
            if theirs.get(key) != ours.get(key):
                raise FieldError(lambda f, key=key: (
                    f"{folder}: the checkpoint is of another model ({key} is {theirs.get(key)!r} there, "
                    f"{ours.get(key)!r} here); resume with the same {f('model')} and options"))
        self._state = state

    def _restore(self, folder: Path) -> None:
        state = self._state
        dist_.load_optimizer_state(self.model, self.optimizer, state["optimizer"], self.fsdp)
        self.step = int(state["step"])
        self.best = state.get("best")
        self.bad_evals = int(state.get("bad_evals", 0))
        self.tokens_seen = int(state.get("tokens", 0))
        self.elapsed = float(state.get("elapsed", 0.0))
        self.task.load_state_dict(state["data"])
        rngs = state["rng"]
        mine = rngs[self.ctx.rank] if self.ctx.rank < len(rngs) else rngs[0]
        set_rng_state(mine)
        if self.ctx.main:
            self._truncate_log(self.step)
            self.history = self._read_log()

    # -- logging ----------------------------------------------------------------------------

    def _read_log(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def _truncate_log(self, step: int) -> None:
        """After a resume, forget what the interrupted run logged past its checkpoint."""
        records = [r for r in self._read_log() if r.get("step", 0) <= step]
        tmp = self.log_path.with_name(".log.jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        os.replace(tmp, self.log_path)

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.ctx.main:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    # -- the loop ---------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train to ``cfg.steps`` (or until early stopping); returns a summary."""
        self._prepare()
        ctx, cfg, task = self.ctx, self.cfg, self.task
        if self.step >= cfg.steps:
            raise FieldError(lambda f: f"the checkpoint is at step {self.step}, already at {f('steps')} {cfg.steps}; "
                                       f"give more {f('steps')} to train further")
        names = list(task.weights)
        progress = Progress(cfg.steps, self.step, cfg.progress and ctx.main, cfg.log_every)
        step_times: list[float] = []
        stopped_early = False
        autocast = (torch.autocast(ctx.device.type, dtype=torch.bfloat16) if cfg.bf16 else nullcontext())
        t_start = self._t_start = time.time()
        evaluated = False
        while self.step < cfg.steps:
            t0 = time.perf_counter()
            self.model.train()
            batches = [task.next_batch(cfg.batch_size, ctx) for _ in range(cfg.grad_accum)]
            skipped = next((b["skip"] for b in batches if "skip" in b), None)
            # Every process skips when one does (the others would wait for it in the all-reduce).
            if float(dist_.all_reduce_sum(torch.tensor([float(skipped is not None)]), ctx)) and skipped is None:
                skipped = "another process could not make its batch"
            if skipped is None:
                self._update(batches, names, autocast, progress, t0, step_times)
            else:  # the task could not make this step's batch (a reward that failed): no update
                self.step += 1
                self._log({"step": self.step, "split": "train", "skipped": skipped,
                           "time": self.elapsed + time.time() - t_start})
                if progress.enabled:
                    progress.message(f"step {self.step} skipped: {skipped}")
                elif ctx.main:  # said even without a progress display
                    print(f"step {self.step} skipped: {skipped}", file=sys.stderr, flush=True)

            last_step = self.step == cfg.steps
            if (cfg.eval_every and self.step % cfg.eval_every == 0) or last_step:
                evaluated = True
                if self._evaluate(progress):
                    stopped_early = True
            if (cfg.save_every and self.step % cfg.save_every == 0) or last_step or stopped_early:
                self._checkpoint()
            if stopped_early:
                progress.message(f"early stopping at step {self.step}: no better {self.metric} "
                                 f"in {cfg.patience} evaluations")
                break
        progress.close()
        if not evaluated or self.best is None:
            self._save_model()
        if ctx.main and cfg.plot:
            self._plot()
        dist_.barrier(ctx)
        times = sorted(step_times)
        return {
            "steps": self.step,
            "best": self.best,
            "metric": self.metric,
            "stopped_early": stopped_early,
            "ms_per_step": 1000 * sum(times) / len(times) if times else None,
            "ms_per_step_median": 1000 * times[len(times) // 2] if times else None,
            "seconds": time.time() - t_start,
            "out": str(self.out),
        }

    def _update(self, batches, names, autocast, progress, t0: float, step_times: list[float]) -> None:
        """One optimizer step over ``batches`` (the accumulation steps), logged."""
        ctx, cfg, task = self.ctx, self.cfg, self.task
        counts = torch.tensor([[float(b["counts"].get(n, 0)) for n in names] for b in batches]).sum(0)
        tokens = torch.tensor([float(sum(task.tokens(b) for b in batches))])
        reduced = dist_.all_reduce_sum(torch.cat([counts, tokens]), ctx)
        counts, tokens = reduced[:-1], int(reduced[-1])
        sums = torch.zeros(len(names))
        for i, batch in enumerate(batches):
            batch = _to_device(batch, ctx.device)
            last = i == len(batches) - 1
            if self.fsdp:  # FSDP2 reduces gradients only after the last accumulation step
                self.model.set_requires_gradient_sync(last)
            sync = nullcontext() if last or not ctx.distributed or self.fsdp else self.model.no_sync()
            with sync:
                with autocast:
                    terms = task.loss_terms(self.model, batch)
                loss = sum(
                    task.weights[n] * terms[n] * (ctx.world / counts[j].clamp(min=1))
                    for j, n in enumerate(names) if n in terms
                )
                loss.backward()
            sums += torch.stack([terms[n].detach().float().cpu() if n in terms else torch.zeros(()) for n in names])
        sums = dist_.all_reduce_sum(sums, ctx)
        means = sums / counts.clamp(min=1)
        lr = self.schedule(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        grad_norm = None
        if cfg.clip:
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += tokens
        dt = time.perf_counter() - t0
        step_times.append(dt)
        total = float(sum(task.weights[n] * means[j] for j, n in enumerate(names)))
        record = {"step": self.step, "split": "train", "loss": total}
        if len(names) > 1:
            record.update({n: float(means[j]) for j, n in enumerate(names)})
        record.update(lr=lr, grad_norm=grad_norm, tokens=self.tokens_seen, tokens_per_s=tokens / dt,
                      ms_per_step=dt * 1000, time=self.elapsed + time.time() - self._t_start)
        self._log(record)
        progress.update(self.step, total, tokens / dt, dt * 1000)

    def _evaluate(self, progress: Progress) -> bool:
        """Evaluate, keep the best model, and say whether to stop early."""
        module = dist_.unwrap(self.model)  # under FSDP, every process runs the sharded forward
        module.eval()
        autocast = torch.autocast(self.ctx.device.type, dtype=torch.bfloat16) if self.cfg.bf16 else nullcontext()
        with torch.no_grad(), autocast:
            metrics = self.task.evaluate(module, self.ctx)
        module.train()
        metrics = dist_.broadcast(metrics, self.ctx)
        if not metrics:
            return False
        self._log({"step": self.step, "split": "dev", **metrics, "time": self.elapsed + time.time() - self._t_start})
        progress.message(f"step {self.step} dev: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if self.metric not in metrics:
            raise FieldError(lambda f: f"{f('metric')} {self.metric!r} is not one of the evaluation's: "
                                       f"{', '.join(metrics)}")
        value = metrics[self.metric]
        if better(self.metric, value, self.best):
            self.best, self.bad_evals = value, 0
            self._save_model()
        else:
            self.bad_evals += 1
        return self.cfg.patience is not None and self.bad_evals >= self.cfg.patience

    def _whole_model(self, optimizer: bool = False):
        """(module to save, optimizer state): under FSDP, gathered into the CPU copy."""
        if not self.fsdp:
            return dist_.unwrap(self.model), self.optimizer.state_dict() if optimizer else None
        model_state, optim_state = dist_.full_state(self.model, self.optimizer if optimizer else None, fsdp=True)
        if self.ctx.main:
            self.shadow.load_state_dict(model_state)
        return self.shadow, optim_state

    def _save_model(self) -> None:
        """The model to use (the best one, when there is a dev metric) in ``out/model``."""
        module, _ = self._whole_model()
        if self.ctx.main:
            tmp = fresh_tmp(self.out, "model")
            self.task.save(module, tmp)
            publish(tmp, self.out / "model")
        dist_.barrier(self.ctx)

    def _checkpoint(self) -> None:
        ctx = self.ctx
        rng = rng_state()
        rngs = [rng]
        if ctx.distributed:
            rngs = [None] * ctx.world
            torch.distributed.all_gather_object(rngs, rng)
        module, optimizer_state = self._whole_model(optimizer=True)
        if ctx.main:
            name = checkpoint_name(self.step)
            tmp = fresh_tmp(self.out, name)
            self.task.save(module, tmp)
            state = {
                "format": STATE_FORMAT,
                "objective": self.task.name,
                "signature": self.task.signature(),
                "step": self.step,
                "optimizer": optimizer_state,
                "fsdp": self.fsdp,
                "rng": rngs,
                "data": self.task.state_dict(),
                "best": self.best,
                "bad_evals": self.bad_evals,
                "tokens": self.tokens_seen,
                "elapsed": self.elapsed + time.time() - self._t_start,
            }
            torch.save(state, tmp / STATE_FILE)
            publish(tmp, self.out / name)
            prune(self.out, self.cfg.keep)
        dist_.barrier(ctx)

    def _plot(self) -> None:
        from .plots import plot_log

        try:
            plot_log(self.history, self.out / "loss.png", self.metric)
        except LmatlasError:
            pass  # no matplotlib: log.jsonl holds the same numbers


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    if device.type == "cpu":
        return batch
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


__all__ = ["Task", "Trainer", "better"]
