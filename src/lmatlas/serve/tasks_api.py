"""The Inference API's task routes, ``POST /models/{task}`` with ``{"inputs", "parameters"}``
over the pipelines (their transformers v4 output schemas), ``POST /search`` over the served
index, and ``GET /catalog`` (the catalogue of models, for the playground's table and chart)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from ..errors import LmatlasError
from .errors import ApiError
from .schemas import SearchHit, SearchRequest, SearchResults, TaskRequest

router = APIRouter()
# A pipeline runs one call at a time (its model's threads are the machine's).
_RUNNING = threading.Lock()


def _plain(value: Any) -> Any:
    """A pipeline's output as JSON types (numpy scalars and arrays become numbers and lists)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


@router.get("/models/tasks")
def tasks(request: Request) -> dict:
    """The task names this server answers, and the model of each."""
    from ..pipelines import TASKS

    state = request.app.state.lmatlas
    served = {name: state.embedding_name for name, t in TASKS.items() if t.default}
    served.update(state.config.task_models)
    return {"tasks": served}


@router.post("/models/{task:path}")
async def run_task(task: str, body: TaskRequest, request: Request) -> Any:
    state = request.app.state.lmatlas
    state.ready()
    pipe = await asyncio.to_thread(state.pipeline, task)

    def call():
        with _RUNNING:
            return pipe(body.inputs, **body.parameters)

    try:
        return _plain(await asyncio.to_thread(call))
    except LmatlasError as e:
        raise ApiError(400, str(e), param="inputs") from None
    except TypeError as e:  # an option the pipeline does not take
        raise ApiError(400, f"{task}: {e}", param="parameters") from None


@router.post("/search", response_model=SearchResults)
async def search(body: SearchRequest, request: Request) -> SearchResults:
    state = request.app.state.lmatlas
    state.ready()
    if state.index is None:
        raise ApiError(404, "this server has no search index (start it with --index FOLDER)", param="index")

    def call():
        with _RUNNING:
            return state.index.query(body.query, k=body.k)

    try:
        hits = await asyncio.to_thread(call)
    except LmatlasError as e:
        raise ApiError(400, str(e), param="query") from None
    return SearchResults(hits=[SearchHit(score=h.score, source=str(h.source), line=h.line, text=h.text) for h in hits])


@router.get("/catalog")
def catalog() -> dict:
    from ..catalog import models

    return {"models": [m.to_dict() for m in models()]}
