"""What the server serves: its settings, and the models it loads once at start (in a thread, so
that ``/health`` answers 503 while they load) — the chat model and its decode loop, the
sentence-embedding model and its batcher, the task pipelines (loaded on first use) and the
search index."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LmatlasError
from .engine import End, Engine, Failure, Sampling
from .errors import ApiError

log = logging.getLogger("lmatlas.serve")


@dataclass
class ServerConfig:
    """``lmatlas serve``'s flags."""

    model: str | None = None  # the chat model (default: SmolLM2-135M-Instruct)
    embedding_model: str | None = None  # default: all-MiniLM-L6-v2
    index: str | None = None  # a search index folder (``lmatlas search build``)
    task_models: dict[str, str] = field(default_factory=dict)  # task -> model, for /models/{task}
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_concurrent: int = 16  # rows decoded at once
    max_queue: int = 64
    allowed_origins: list[str] = field(default_factory=list)
    timeout: float = 600.0  # seconds a request may take, queue included
    max_tokens: int = 512  # a reply's length when the request names none
    max_body: int = 1 << 20  # bytes
    quantize: str | None = None  # the chat model's matrices quantized to this type (lmatlas.load)
    dequantize: bool = False  # a GGUF chat model's matrices in float32


def chat_model_source(model: str | None) -> Path | str:
    """Where the chat model is: a GGUF file, a folder or hub id, or the default model."""
    from ..checkpoint import resolve
    from ..defaults import generative_model
    from ..gguf import find_gguf

    if model is None:
        return generative_model()
    return find_gguf(model) or resolve(model)


class Embedder:
    """Sentence embeddings; requests that arrive together are embedded in one batch (a worker
    thread takes every request waiting when it is free)."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.jobs: queue.Queue = queue.Queue()
        self.batches: list[int] = []  # texts per batch, for the tests
        threading.Thread(target=self._work, name="lmatlas-serve-embed", daemon=True).start()

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """The vectors of ``texts`` and their token count (blocking)."""
        done = threading.Event()
        job = {"texts": texts, "done": done}
        self.jobs.put(job)
        done.wait()
        if "error" in job:
            raise job["error"]
        return job["vectors"], job["tokens"]

    def _work(self) -> None:
        while True:
            jobs = [self.jobs.get()]
            while True:
                try:
                    jobs.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            texts = [t for job in jobs for t in job["texts"]]
            self.batches.append(len(texts))
            try:
                vectors = self.encoder.encode(texts)
                counts = self.encoder.token_counts(texts)
                at = 0
                for job in jobs:
                    n = len(job["texts"])
                    job["vectors"], job["tokens"] = vectors[at:at + n], sum(counts[at:at + n])
                    at += n
            except Exception as e:  # noqa: BLE001 - handed to the waiting requests
                for job in jobs:
                    job["error"] = e
            for job in jobs:
                job["done"].set()


class State:
    """The loaded models, and whether they are ready."""

    def __init__(self, config: ServerConfig, metrics):
        self.config = config
        self.metrics = metrics
        self.status = "loading"
        self.started = time.time()
        self.message: str | None = None
        self.engine: Engine | None = None
        self.tokenizer = None
        self.chat_name = ""
        self.embedder: Embedder | None = None
        self.embedding_name = ""
        self.index = None
        self.pipelines: dict[str, Any] = {}
        self.pipeline_lock = threading.Lock()

    def load(self) -> None:
        """Load the models (``status`` becomes "ok", or "failed" with the reason)."""
        try:
            self._load()
            self.status = "ok"
            log.info("lmatlas serve: ready")
        except Exception as e:  # noqa: BLE001 - reported by /health and every route
            self.status, self.message = "failed", str(e)
            log.error("lmatlas serve: loading failed: %s", e)

    def _load(self) -> None:
        from ..embeddings import SentenceEncoder
        from ..loader import load
        from ..search import Index
        from ..tokenizer import load_tokenizer

        c = self.config
        source = chat_model_source(c.model)
        self.tokenizer = load_tokenizer(source)
        model = load(source, head="causal-lm", quantize=c.quantize, dequantize=c.dequantize)
        self.chat_name = c.model or "SmolLM2-135M-Instruct"
        self.engine = Engine(model, self.tokenizer, c.max_concurrent, c.max_queue, c.timeout, self.metrics)
        self.engine.start()
        self._warm_up()
        self.embedder = Embedder(SentenceEncoder(c.embedding_model))
        self.embedding_name = c.embedding_model or "all-MiniLM-L6-v2"
        if c.index is not None:
            index = Index(c.index)
            if not index.exists():
                raise LmatlasError(f"--index {c.index}: no search index there (build one with `lmatlas search build`)")
            self.index = index

    def _warm_up(self) -> None:
        """One short greedy reply before the server says it is ready: the first decode builds
        and packs the runtime's kernels, which no user's request should wait for."""
        done = threading.Event()

        def heard(event) -> None:
            if isinstance(event, (End, Failure)):
                done.set()

        prompt = self.tokenizer.encode("Hello") or [0]
        self.engine.submit(prompt, Sampling(max_tokens=2, temperature=0.0), heard)
        done.wait(self.config.timeout)

    def ready(self) -> None:
        """A 503 unless the models are loaded."""
        if self.status == "loading":
            raise ApiError(503, "the server is loading its models; retry shortly", headers={"Retry-After": "1"})
        if self.status == "failed":
            raise ApiError(503, f"the server could not load its models: {self.message}")

    def model_names(self) -> list[str]:
        return [self.chat_name, self.embedding_name]

    def pipeline(self, name: str):
        """The pipeline for a task name (or a model named with ``--task-model``), loaded once."""
        from ..pipelines import TASKS, canonical, pipeline

        served = [t for t, m in self.config.task_models.items() if m == name]
        if len(served) > 1:
            raise ApiError(400, f"{name} serves several tasks ({', '.join(served)}); name the task in the route",
                           param="task")
        task = served[0] if served else name
        try:
            canonical_task = canonical(task)
        except LmatlasError as e:
            raise ApiError(404, str(e), param="task", code="model_not_found") from None
        with self.pipeline_lock:
            if task not in self.pipelines:
                model = self.config.task_models.get(task, self.config.task_models.get(canonical_task))
                spec = TASKS[canonical_task]
                if model is None and not spec.default:
                    raise ApiError(404, f"no model serves {task} here: start the server with "
                                        f"--task-model {task}=MODEL ({spec.needs})", param="task",
                                   code="model_not_found")
                if model is None:
                    model = self.config.embedding_model
                try:
                    self.pipelines[task] = pipeline(task, model)
                except LmatlasError as e:
                    raise ApiError(400, str(e), param="task") from None
            return self.pipelines[task]

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.stop(timeout=self.config.timeout)
