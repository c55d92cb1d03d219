"""Model work on a Ray cluster, by Ray Data: the embeddings of an index or of a file of texts, and
a task over a large file of inputs.

The inputs go into a Ray Data dataset in blocks of ``rows_per_batch`` rows, each row with its
number. ``map_batches`` hands each block to one actor of a fixed pool; each actor loaded the
model once, when it started. The blocks of results come back in whatever order the actors finish
them; each is written as it arrives to a shard (an ``.npz`` file) in a temporary folder beside
the output, and the shards are then read back in the input's order. The driver, not the actors,
writes the shards, so that a cluster needs no file system shared with it.

Without an address the work starts a Ray instance on this machine for the call and shuts it down
after; with ``HOST:PORT`` it connects to that cluster, taking this lmatlas along (its nodes need
lmatlas' dependencies, and the model as a hub id or a folder at the same path). In a process
already connected to Ray (``ray.init``), the work runs there. Ray is imported only here and in ``ray_cluster``, and only when asked for.

Everything is bounded: the address is probed first (``ray_cluster``); the job fails when no
block of results has come back for ``timeout`` seconds (actors waiting for CPUs the cluster
cannot give, a stuck node), with one sentence naming the setting.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .errors import LmatlasError
from .ray_cluster import INSTALL, RayOptions, check_address, import_ray, ray_options, session  # noqa: F401  (re-exported)

SHARDS = ".lmatlas-ray-"  # the temporary folder's prefix (a stopped run's folder is swept by the next index build)


@contextlib.contextmanager
def _data_context(ray, opts: RayOptions) -> Iterator[None]:
    """Ray Data's settings for the job, and its log quiet (the job's own error is what the user
    sees); datasets copy the context when they are made, so it is restored after."""
    logger = logging.getLogger("ray.data")
    level = logger.level
    # The actors' own exceptions, not Ray Data's wrapping of their text: a user's mistake is
    # found in them and said as it would be without Ray.
    settings = {"enable_progress_bars": False, "print_on_execution_start": False,
                "wait_for_min_actors_s": max(1, int(opts.timeout)), "raise_original_map_exception": True}
    with warnings.catch_warnings():
        # Ray's notices of its own deprecated settings, which making or copying a context sets.
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ray.data.DataContext.get_current()
        saved = {name: getattr(ctx, name) for name in settings}
        logger.setLevel(logging.CRITICAL)
        try:
            for name, value in settings.items():
                setattr(ctx, name, value)
            yield
        finally:
            for name, value in saved.items():
                setattr(ctx, name, value)
            logger.setLevel(level)


def _pool_size(ray, opts: RayOptions, blocks: int) -> int:
    cpus = float(ray.cluster_resources().get("CPU", 0))
    actors = opts.actors if opts.actors is not None else max(1, int(cpus))
    if actors * opts.cpus_per_actor > cpus:
        raise LmatlasError(
            f"actors={actors} with cpus_per_actor={opts.cpus_per_actor:g} need {actors * opts.cpus_per_actor:g} CPUs, "
            f"and the Ray cluster has {cpus:g}; give fewer actors or a fraction of a CPU each"
        )
    return max(1, min(actors, blocks))


# -- the job --------------------------------------------------------------------------------------


def map_rows(columns: dict[str, list | np.ndarray], worker: type, opts: RayOptions,
             progress: Callable[[int], None] | None = None, align: int = 1) -> dict[str, np.ndarray]:
    """``worker`` (a callable class: a dict of numpy columns in, one out, with the ``row``
    column passed through) over the rows of ``columns`` on Ray; its outputs in the rows' order.
    ``align``: blocks start at multiples of it (a task's model batches then match a run without
    Ray); ``progress``: called with the rows of each block done."""
    import pyarrow as pa

    n = len(next(iter(columns.values())))
    size = -(-opts.rows_per_batch // align) * align
    with session(opts) as ray, _data_context(ray, opts), \
            tempfile.TemporaryDirectory(prefix=SHARDS, dir=opts.scratch) as folder:
        blocks = [pa.table({"row": np.arange(lo, min(lo + size, n)), **{k: v[lo : lo + size] for k, v in columns.items()}})
                  for lo in range(0, n, size)]
        pool = _pool_size(ray, opts, len(blocks))
        # On this machine an actor that dies is not started again (a cluster's node may go away:
        # there Ray restarts it, and its C++ core logs an error line about that on every job).
        # (Ray Data takes max_restarts among the remote arguments it calls deprecated from 2.64.)
        restarts = {"max_restarts": 0} if opts.address is None else {}
        ds = ray.data.from_arrow(blocks).map_batches(
            worker, batch_size=None, batch_format="numpy", num_cpus=opts.cpus_per_actor,
            compute=ray.data.ActorPoolStrategy(size=pool), **restarts,
        )
        for i, batch in enumerate(_pull(ds, opts.timeout)):
            np.savez(Path(folder) / f"part-{i:06d}.npz", **{k: _savable(v) for k, v in batch.items()})
            if progress is not None:
                progress(len(batch["row"]))
        return _gather(Path(folder), n)


def _pull(ds, timeout: float) -> Iterator[dict[str, np.ndarray]]:
    """The dataset's blocks of results, pulled by a thread so that a job that stops sending
    them can be given up after ``timeout`` seconds."""
    found: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def hand(item) -> None:  # never blocks for good: the caller may have given up
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                found.put(item, timeout=0.5)
                return

    def pull() -> None:
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                if stop.is_set():
                    return
                hand(("batch", batch))
            hand(("done", None))
        except BaseException as e:  # handed to the caller's thread, which raises it
            hand(("error", e))

    thread = threading.Thread(target=pull, name="lmatlas-ray-results", daemon=True)
    thread.start()
    try:
        while True:
            try:
                kind, value = found.get(timeout=timeout)
            except queue.Empty:
                raise LmatlasError(
                    f"the Ray job sent no results for {timeout:g} s (timeout={timeout:g}): its actors may be waiting "
                    "for CPUs the cluster cannot give, or loading a large model; give more time or fewer actors"
                ) from None
            if kind == "done":
                return
            if kind == "error":
                mistake = _user_error(value) or _lost_actors(value)
                if mistake is not None:
                    raise mistake from None
                raise value
            yield value
    finally:
        stop.set()


def _user_error(error: BaseException) -> LmatlasError | None:
    """The user's mistake (an ``LmatlasError`` an actor raised) inside Ray's wrapping, if that
    is what stopped the job."""
    seen, todo = set(), [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        # Ray's wrapping is an instance of its cause's class too: the cause itself is wanted.
        if isinstance(e, LmatlasError) and getattr(e, "cause", None) is None:
            if e.args and isinstance(e.args[0], str):  # Ray Data appends lines on retrying to the message
                e.args = (e.args[0].split("\n", 1)[0], *e.args[1:])
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None


def _lost_actors(error: BaseException) -> LmatlasError | None:
    """An actor's process or node gone (killed for memory, a module missing on a node): said in
    one sentence, with the last line of Ray's account, which names the cause."""
    from ray import exceptions as ex

    if not isinstance(error, (ex.ActorDiedError, ex.WorkerCrashedError, ex.NodeDiedError, ex.OutOfMemoryError)):
        return None
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b", line)]
    why = (named or lines or [type(error).__name__])[-1].split(". ")[0].rstrip(".")
    return LmatlasError(f"the Ray job lost its actors ({why}); the nodes need lmatlas' dependencies and room for the model")


def _savable(values: np.ndarray) -> np.ndarray:
    """Strings as a fixed-width array (``np.save`` then needs no pickle)."""
    return values.astype(str) if values.dtype == object else values


def _gather(folder: Path, n: int) -> dict[str, np.ndarray]:
    """The shards' columns, joined in row order."""
    parts = []
    for path in sorted(folder.glob("part-*.npz")):
        with np.load(path, allow_pickle=False) as shard:
            parts.append({k: shard[k] for k in shard.files})
    if not parts:
        raise RuntimeError("the Ray job returned no results")
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(out["row"], kind="stable")
    if not np.array_equal(out["row"][order], np.arange(n)):
        raise RuntimeError(f"the Ray job returned rows {len(out['row'])} for {n} inputs")
    return {k: v[order] for k, v in out.items() if k != "row"}


# -- the actors -----------------------------------------------------------------------------------


class _Actor:
    """An actor's model, loaded once when it starts. A mistake in loading it (a folder that is
    not a model, a bad option) is raised by its first block, which Ray reports to the caller.
    The settings are a class attribute of a subclass made per job (``_job``), not constructor
    arguments, which Ray would keep in its object store and warn about."""

    settings: dict = {}

    def __init__(self):
        import torch

        # A whole number of CPUs is the actor's threads; a fraction shares one.
        torch.set_num_threads(max(1, int(self.settings["cpus"])))
        # Relative paths (a model folder, images) mean what they meant where the work was asked for.
        with contextlib.suppress(OSError):
            os.chdir(self.settings["cwd"])
        self.error: LmatlasError | None = None
        try:
            self.load(**self.settings["load"])
        except LmatlasError as e:
            self.error = e

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.error is not None:
            raise self.error
        return {"row": batch["row"], **self.work(batch)}

    def load(self, **settings) -> None:
        raise NotImplementedError

    def work(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


def _job(actor: type, opts: RayOptions, **load) -> type:
    settings = {"cpus": opts.cpus_per_actor, "cwd": os.getcwd(), "load": load}
    return type(actor.__name__.lstrip("_"), (actor,), {"settings": settings})


class _Embedder(_Actor):
    def load(self, model, index, batch_size, normalize, truncate) -> None:
        from .embeddings import encoder as sentence_encoder
        from .search import encoder as index_encoder

        # An index's encoder is CLIP's two towers for a CLIP model; `embed` reads texts only.
        self.encoder = index_encoder(model) if index else sentence_encoder(model)
        self.batch_size, self.normalize, self.truncate = batch_size, normalize, truncate

    def work(self, batch):
        from .embeddings import TextTooLong

        images = batch["image"].astype(bool)
        out = np.zeros((len(images), self.encoder.dim), dtype=np.float32)
        texts = np.flatnonzero(~images)
        if len(texts):
            try:
                out[texts] = self.encoder.encode([str(batch["text"][i]) for i in texts], batch_size=self.batch_size,
                                                 normalize=self.normalize, truncate=self.truncate)
            except TextTooLong as e:  # named by its row in the whole input, not in this block
                raise TextTooLong(int(batch["row"][texts[e.index]]), e.tokens, e.limit) from None
        if images.any():
            out[images] = self.encoder.encode_images([str(p) for p in batch["text"][images]])
        return {"vector": out}


class _Task(_Actor):
    def load(self, task, model, dtype, batch_size, options) -> None:
        from .pipelines import pipeline

        self.pipe = pipeline(task, model, dtype=dtype, batch_size=batch_size, **options)
        self.batch_size = batch_size

    def work(self, batch):
        import json

        from .pipelines.base import call_each, jsonable

        rows, inputs, ready = batch["row"], batch["input"], batch["ready"].astype(bool)
        outputs, errors = [""] * len(rows), [""] * len(rows)
        # The same model calls as a run without Ray: the inputs of each batch_size-long stretch of rows.
        for chunk in np.unique(rows // self.batch_size):
            at = np.flatnonzero((rows // self.batch_size == chunk) & ready)
            if not len(at):
                continue
            for i, (value, error) in zip(at, call_each(self.pipe, [json.loads(str(inputs[i])) for i in at])):
                outputs[i], errors[i] = ("", error) if error is not None else (json.dumps(jsonable(value)), "")
        return {"output": np.array(outputs, dtype=object), "error": np.array(errors, dtype=object)}


# -- the work -------------------------------------------------------------------------------------


def _bar(progress, total: int, unit: str):
    from .embeddings import progress_bar

    return progress if hasattr(progress, "update") else progress_bar(bool(progress), total, unit)


def embed(texts, model=None, *, ray: Any = True, batch_size: int = 32, normalize: bool | None = None,
          truncate: bool = True, progress: Any = False, images: list[bool] | None = None, index: bool = False) -> np.ndarray:
    """Sentence embeddings of ``texts`` on Ray, as ``lmatlas.embed`` gives them. ``index``: with
    the encoder of a search index (CLIP's towers for a CLIP model), ``images`` marking the texts
    that are image files."""
    opts = ray_options(ray) or RayOptions()
    single = isinstance(texts, str)
    texts = [texts] if single else list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise LmatlasError(f"text {i} is a {type(t).__name__}, not a string")
    if batch_size < 1:
        raise LmatlasError(f"batch_size must be at least 1, not {batch_size}")
    if not texts:
        raise LmatlasError("no texts to embed")
    job = _job(_Embedder, opts, model=None if model is None else str(model), index=index, batch_size=batch_size,
               normalize=normalize, truncate=truncate)
    bar = _bar(progress, len(texts), "text")
    try:
        columns = {"text": texts, "image": np.array(images if images is not None else [False] * len(texts))}
        vectors = map_rows(columns, job, opts, bar.update)["vector"].astype(np.float32)
    finally:
        if bar is not progress:
            bar.close()
    return vectors[0] if single else vectors


def run_task(task: str, inputs: list, model=None, *, ray: Any = True, batch_size: int = 8, dtype: str | None = None,
             progress: Any = False, **options: Any) -> list[tuple[Any, str | None]]:
    """``lmatlas.pipeline(task, model, ...)`` over ``inputs`` on Ray: ``(output, None)`` or
    ``(None, error)`` for each input, in order (an input that fails does not stop the others).
    A ``None`` input keeps a place (``(None, None)``), so that the model calls match a run
    without Ray over the same list. Inputs and outputs travel as JSON."""
    import json

    from .pipelines import canonical

    ray_opts = ray_options(ray) or RayOptions()
    if batch_size < 1:
        raise LmatlasError(f"batch_size must be at least 1, not {batch_size}")
    if not inputs:
        raise LmatlasError("no inputs to run")
    canonical(task)  # an unknown task is named here, not by every actor
    job = _job(_Task, ray_opts, task=task, model=None if model is None else str(model), dtype=dtype,
               batch_size=batch_size, options=options)
    try:
        sent = ["" if x is None else json.dumps(x, ensure_ascii=False) for x in inputs]
    except TypeError as e:
        raise LmatlasError(f"inputs go to Ray as JSON, and one cannot be written so ({e})") from None
    columns = {"input": sent, "ready": np.array([x is not None for x in inputs])}
    bar = _bar(progress, len(inputs), "input")
    try:
        out = map_rows(columns, job, ray_opts, bar.update, align=batch_size)
    finally:
        if bar is not progress:
            bar.close()
    return [(None, None) if x is None else (None, str(e)) if e else (json.loads(str(o)), None)
            for x, o, e in zip(inputs, out["output"], out["error"])]
