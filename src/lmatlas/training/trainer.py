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
import math
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import LmatlasError
from . import distributed as dist_
from .distributed import Context

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
        term's number of items (labelled tokens, examples)."""
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


@dataclass
class TrainConfig:
    out: str | os.PathLike
    steps: int = 1000
    batch_size: int = 8  # per process and accumulation step
    grad_accum: int = 1
    lr: float = 3e-4
    min_lr: float | None = None  # default: lr / 10 for cosine, 0 for linear
    warmup: int = 0
    schedule: str = "cosine"
    decay_steps: int | None = None  # default: steps
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    clip: float | None = 1.0
    bf16: bool = False
    eval_every: int = 0  # 0: at the end only
    patience: int | None = None  # evaluations without improvement before stopping
    metric: str | None = None  # default: the task's
    save_every: int = 0  # 0: at the end only
    keep: int = 2  # checkpoints kept
    seed: int = 1337
    device: str | None = None
    fsdp: bool = False
    resume: bool | str = False
    progress: bool = True
    log_every: int = 10  # printed lines when the output is not a terminal
    plot: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise LmatlasError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if self.lr <= 0:
            raise LmatlasError(f"--lr must be positive, not {self.lr}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise LmatlasError(f"--schedule must be cosine, linear or constant, not {self.schedule!r}")
        if self.warmup < 0 or self.eval_every < 0 or self.save_every < 0:
            raise LmatlasError("--warmup, --eval-every and --save-every must not be negative")
        if self.min_lr is None:
            self.min_lr = self.lr / 10 if self.schedule == "cosine" else 0.0 if self.schedule == "linear" else self.lr


class Schedule:
    """Learning rate at each step: linear warmup, then cosine or linear decay to ``min_lr`` at
    ``decay_steps`` (nanoGPT's ``get_lr``), or constant."""

    def __init__(self, cfg: TrainConfig):
        self.lr, self.min_lr, self.warmup = cfg.lr, cfg.min_lr, cfg.warmup
        self.decay = cfg.decay_steps or cfg.steps
        self.kind = cfg.schedule

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / (self.warmup + 1)
        if self.kind == "constant":
            return self.lr
        if step > self.decay or self.decay <= self.warmup:
            return self.min_lr
        ratio = (step - self.warmup) / (self.decay - self.warmup)
        if self.kind == "cosine":
            coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
        else:
            coeff = 1.0 - ratio
        return self.min_lr + coeff * (self.lr - self.min_lr)


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: matrices (and embeddings) decay, biases and norm weights (1-D) do not."""
    decay, no_decay = [], []
    for _, p in module.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------------
# Checkpoint folders
# ---------------------------------------------------------------------------------------------

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.pt"


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints in ``out``, oldest first (temporary folders are not complete)."""
    if not out.is_dir():
        return []
    found = []
    for p in out.iterdir():
        if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and (p / STATE_FILE).is_file():
            try:
                found.append((int(p.name[len(CHECKPOINT_PREFIX):]), p))
            except ValueError:
                continue
    return [p for _, p in sorted(found)]


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    try:
        fd = os.open(folder, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def publish(tmp: Path, final: Path) -> None:
    """Move a finished temporary folder into place; an older ``final`` is replaced."""
    _fsync_tree(tmp)
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def fresh_tmp(out: Path, name: str) -> Path:
    tmp = out / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


# ---------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------


def _fmt_rate(x: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if x >= size:
            return f"{x / size:.1f}{unit}"
    return f"{x:.0f}"


def _fmt_time(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """A one-line bar on a terminal; a line every ``every`` steps otherwise."""

    def __init__(self, total: int, start: int, enabled: bool, every: int):
        self.total, self.enabled, self.every = total, enabled, max(1, every)
        self.tty = enabled and sys.stderr.isatty()
        self.start_step, self.t0 = start, time.time()

    def update(self, step: int, loss: float, tokens_per_s: float, ms: float) -> None:
        if not self.enabled:
            return
        done = step - self.start_step
        eta = (time.time() - self.t0) / max(done, 1) * (self.total - step)
        text = (f"step {step}/{self.total} loss {loss:.4f} {_fmt_rate(tokens_per_s)} tok/s "
                f"{ms:.0f} ms/step eta {_fmt_time(eta)}")
        if self.tty:
            width = 20
            filled = int(width * step / self.total)
            print(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}\033[K", end="", file=sys.stderr, flush=True)
        elif step % self.every == 0 or step == self.total:
            print(text, file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        print(("\r\033[K" if self.tty else "") + text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr, flush=True)


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
            raise LmatlasError(f"{self.out} already holds the checkpoints of a run; continue it with --resume, "
                               "or give another --out")
        if resume_from is not None:
            self._check_compatible(resume_from)
            self.task.load(resume_from)
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

    def _read_state(self, folder: Path) -> dict[str, Any]:
        try:
            return torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        except Exception as e:
            raise LmatlasError(f"{folder / STATE_FILE}: not a readable trainer state ({e})") from None

    def _check_compatible(self, folder: Path) -> None:
        state = self._read_state(folder)
        if state.get("objective") != self.task.name:
            raise LmatlasError(
                f"{folder}: the checkpoint was written by {state.get('objective')!r} training, not {self.task.name!r}"
            )
        if bool(state.get("fsdp", False)) != bool(self.cfg.fsdp and self.ctx.distributed):
            raise LmatlasError(f"{folder}: the checkpoint was written {'with' if state.get('fsdp') else 'without'} "
                               f"FSDP; resume it {'with' if state.get('fsdp') else 'without'} --fsdp under torchrun")
        theirs, ours = state.get("signature", {}), self.task.signature()
        for key in sorted(set(theirs) | set(ours)):
            if theirs.get(key) != ours.get(key):
                raise LmatlasError(
                    f"{folder}: the checkpoint is of another model ({key} is {theirs.get(key)!r} there, "
                    f"{ours.get(key)!r} here); resume with the same --model and options"
                )
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
        torch.set_rng_state(mine["torch"])
        if torch.cuda.is_available() and mine.get("cuda") is not None:
            torch.cuda.set_rng_state(mine["cuda"])
        random.setstate(_to_tuple(mine["python"]))
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
            raise LmatlasError(f"the checkpoint is at step {self.step}, already at --steps {cfg.steps}; "
                               "give more --steps to train further")
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
                          ms_per_step=dt * 1000, time=self.elapsed + time.time() - t_start)
            self._log(record)
            progress.update(self.step, total, tokens / dt, dt * 1000)

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
        if ctx.main:
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
            raise LmatlasError(f"--metric {self.metric!r} is not one of the evaluation's: {', '.join(metrics)}")
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
        rng = {"torch": torch.get_rng_state(), "python": list(_to_list(random.getstate())),
               "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}
        rngs = [rng]
        if ctx.distributed:
            rngs = [None] * ctx.world
            torch.distributed.all_gather_object(rngs, rng)
        module, optimizer_state = self._whole_model(optimizer=True)
        if ctx.main:
            name = f"{CHECKPOINT_PREFIX}{self.step:06d}"
            tmp = fresh_tmp(self.out, name)
            self.task.save(module, tmp)
            state = {
                "format": 1,
                "objective": self.task.name,
                "signature": self.task.signature(),
                "step": self.step,
                "optimizer": optimizer_state,
                "fsdp": self.fsdp,
                "schedule": {"step": self.step},
                "rng": rngs,
                "data": self.task.state_dict(),
                "best": self.best,
                "bad_evals": self.bad_evals,
                "tokens": self.tokens_seen,
                "elapsed": self.elapsed + time.time() - self._t_start,
                "config": {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in asdict(self.cfg).items()},
            }
            torch.save(state, tmp / STATE_FILE)
            publish(tmp, self.out / name)
            for old in checkpoints(self.out)[: -self.cfg.keep] if self.cfg.keep > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        dist_.barrier(ctx)

    def _plot(self) -> None:
        try:
            plot_log(self.history, self.out / "loss.png", self.metric)
        except ImportError:
            pass


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    if device.type == "cpu":
        return batch
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _to_list(x):
    if isinstance(x, tuple):
        return [_to_list(v) for v in x]
    return x


def _to_tuple(x):
    if isinstance(x, list):
        return tuple(_to_tuple(v) for v in x)
    return x


def plot_log(history: list[dict[str, Any]], path: Path, metric: str | None = None) -> None:
    """The loss curve (train and dev) and the dev metric, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in history if r.get("split") == "train" and r.get("loss") is not None]
    dev = [r for r in history if r.get("split") == "dev"]
    if not train:
        return
    extra = metric if metric and metric != "loss" and any(metric in r for r in dev) else None
    fig, axes = plt.subplots(1, 2 if extra else 1, figsize=(11 if extra else 6, 4), squeeze=False)
    ax = axes[0][0]
    steps, losses = zip(*train)
    ax.plot(steps, losses, lw=0.6, alpha=0.4, color="C0", label="train (per step)")
    k = max(1, len(losses) // 50)
    if k > 1:
        smooth = [sum(losses[max(0, i - k + 1) : i + 1]) / len(losses[max(0, i - k + 1) : i + 1]) for i in range(len(losses))]
        ax.plot(steps, smooth, lw=1.5, color="C0", label=f"train (mean of {k})")
    dev_loss = [(r["step"], r["loss"]) for r in dev if "loss" in r]
    if dev_loss:
        ax.plot(*zip(*dev_loss), "o-", color="C1", label="dev")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    if extra:
        ax2 = axes[0][1]
        ax2.plot([r["step"] for r in dev if extra in r], [r[extra] for r in dev if extra in r], "o-", color="C2")
        ax2.set_xlabel("step")
        ax2.set_ylabel(f"dev {extra}")
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


__all__ = ["Progress", "Schedule", "Task", "TrainConfig", "Trainer", "checkpoints", "param_groups", "plot_log"]
