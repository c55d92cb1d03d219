"""OpenAI's routes, as the official client calls them: ``GET /v1/models``, ``POST
/v1/chat/completions``, ``POST /v1/completions`` (streamed as server-sent events when asked) and
``POST /v1/embeddings`` (float or base64). Generation goes through the decode loop
(``engine``); a stream that ends in an error sends it as an event, then ``[DONE]``."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import AsyncIterator

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import StreamingResponse

from ..chat import apply_chat_template
from ..errors import LmatlasError
from .engine import End, Failure, Finish, Sampling, Token
from .errors import ApiError
from .schemas import (
    AssistantMessage, ChatChoice, ChatCompletion, ChatRequest, ChoiceLogprobs, Completion, CompletionChoice,
    CompletionLogprobs, CompletionRequest, Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage, ModelCard,
    ModelList, TokenLogprob, TopLogprob, Usage,
)  # fmt: skip

router = APIRouter()
_STREAM = {200: {"content": {"text/event-stream": {}}, "description": "the reply; with stream=true, as events"}}


def _state(request: Request):
    state = request.app.state.lmatlas
    state.ready()
    return state


class Generation:
    """The engine requests of one HTTP request (one per prompt), their events as they come."""

    def __init__(self, engine, prompts: list[list[int]], sampling: Sampling):
        self.engine = engine
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.requests = []
        try:
            for i, prompt in enumerate(prompts):
                def emit(event, i=i):
                    loop.call_soon_threadsafe(self.queue.put_nowait, (i, event))

                self.requests.append(engine.submit(prompt, sampling, emit))
        except ApiError:
            self.close()
            raise

    async def events(self) -> AsyncIterator[tuple[int, object]]:
        open_requests = len(self.requests)
        try:
            while open_requests:
                i, event = await self.queue.get()
                yield i, event
                if isinstance(event, Failure):
                    return
                if isinstance(event, End):
                    open_requests -= 1
        finally:
            self.close()

    def close(self) -> None:
        # A finished request is no longer in the batch; the others (a client gone) leave it.
        for r in self.requests:
            if r.open_rows:
                self.engine.cancel(r)


class Collected:
    """A non-streamed reply, gathered from the events."""

    def __init__(self, n: int):
        self.n = n
        self.texts: dict[int, str] = {}
        self.reasons: dict[int, str] = {}
        self.tokens: dict[int, list[Token]] = {}
        self.prompt_tokens = self.completion_tokens = 0

    async def gather(self, generation: Generation) -> "Collected":
        async for i, event in generation.events():
            if isinstance(event, Failure):
                raise event.error
            if isinstance(event, Token):
                self.tokens.setdefault(i * self.n + event.choice, []).append(event)
            elif isinstance(event, Finish):
                self.texts[i * self.n + event.choice] = event.text
                self.reasons[i * self.n + event.choice] = event.reason
            elif isinstance(event, End):
                self.prompt_tokens += event.prompt_tokens
                self.completion_tokens += event.completion_tokens
        return self

    def usage(self) -> Usage:
        return _usage(self.prompt_tokens, self.completion_tokens)


# How often a non-streamed request looks whether its client is still there.
_DISCONNECT_POLL = 0.1


async def _gather_while_connected(generation: Generation, n: int, request: Request) -> "Collected":
    """``Collected(n).gather(generation)``, given up (its rows leave the batch, as a stream's do)
    when the client goes away before the reply is ready."""
    task = asyncio.ensure_future(Collected(n).gather(generation))
    while True:
        done, _ = await asyncio.wait({task}, timeout=_DISCONNECT_POLL)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()  # the events' generator closes, and with it the engine's requests
            raise ApiError(499, "the client closed the connection before the reply was ready")


def _usage(prompt: int, completion: int) -> Usage:
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _check_model(state, name: str | None, served: str) -> str:
    if name not in (None, "", served):
        raise ApiError(404, f"the model {name!r} does not exist here; this server has {served!r} "
                            f"(GET /v1/models lists its models)", param="model", code="model_not_found")
    return served


def _sampling(state, body, prompt_length: int, max_tokens: int | None, logprobs: int | None) -> Sampling:
    stops = body.stops()
    if len(stops) > 4:
        raise ApiError(400, f"stop takes at most 4 strings, not {len(stops)}", param="stop")
    if max_tokens is None:
        max_tokens = max(1, min(state.config.max_tokens, state.engine.context - prompt_length))
    return Sampling(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p, n=body.n, stop=stops,
                    seed=body.seed, presence_penalty=body.presence_penalty,
                    frequency_penalty=body.frequency_penalty, logprobs=logprobs)


def _token_text(tokenizer, token: int) -> str:
    return tokenizer.decode([token], skip_special_tokens=False)


def _chat_logprobs(tokenizer, tokens: list[Token]) -> ChoiceLogprobs:
    content = []
    for t in tokens:
        text = _token_text(tokenizer, t.token)
        top = [TopLogprob(token=(s := _token_text(tokenizer, i)), logprob=lp, bytes=list(s.encode()))
               for i, lp in (t.top or [])]
        content.append(TokenLogprob(token=text, logprob=t.logprob, bytes=list(text.encode()), top_logprobs=top))
    return ChoiceLogprobs(content=content)


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _stream(generation: Generation, chunk, include_usage: bool, n: int) -> AsyncIterator[str]:
    """Server-sent events: the chunks ``chunk(i, event)`` makes, the usage if asked, ``[DONE]``."""
    prompt_tokens = completion_tokens = 0
    async for i, event in generation.events():
        if isinstance(event, Failure):
            yield event.error.event()
            break
        if isinstance(event, End):
            prompt_tokens += event.prompt_tokens
            completion_tokens += event.completion_tokens
            continue
        payload = chunk(i * n, event)
        if payload is not None:
            yield _sse(payload)
    else:
        if include_usage:
            yield _sse(chunk(None, _usage(prompt_tokens, completion_tokens)))
    yield "data: [DONE]\n\n"


@router.get("/v1/models", response_model=ModelList)
def list_models(request: Request) -> ModelList:
    state = _state(request)
    created = int(state.started)
    names = [*state.model_names(), *state.config.task_models.values()]
    return ModelList(data=[ModelCard(id=name, created=created) for name in dict.fromkeys(names)])


@router.get("/v1/models/{model:path}", response_model=ModelCard)
def get_model(model: str, request: Request) -> ModelCard:
    state = _state(request)
    names = [*state.model_names(), *state.config.task_models.values()]
    if model not in names:
        raise ApiError(404, f"the model {model!r} does not exist here", param="model", code="model_not_found")
    return ModelCard(id=model, created=int(state.started))


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=_STREAM)
async def chat_completions(body: ChatRequest, request: Request):
    state = _state(request)
    name = _check_model(state, body.model, state.chat_name)
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    try:
        text = apply_chat_template(state.tokenizer, messages, add_generation_prompt=True)
    except LmatlasError as e:
        raise ApiError(400, str(e), param="messages") from None
    prompt = state.tokenizer.encode(text, add_special_tokens=False)
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    if body.top_logprobs and not body.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
    sampling = _sampling(state, body, len(prompt), body.max_completion_tokens or body.max_tokens, logprobs)
    generation = Generation(state.engine, [prompt], sampling)
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        started: set[int] = set()

        def chunk(index, event):
            base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name}
            if isinstance(event, Usage):
                return {**base, "choices": [], "usage": event.model_dump()}
            c = index + event.choice
            delta = {} if c in started else {"role": "assistant"}
            started.add(c)
            if isinstance(event, Finish):
                return {**base, "choices": [{"index": c, "delta": delta, "finish_reason": event.reason}]}
            if not event.text and logprobs is None and delta == {}:
                return None
            choice = {"index": c, "delta": {**delta, "content": event.text}, "finish_reason": None}
            if logprobs is not None:
                choice["logprobs"] = _chat_logprobs(state.tokenizer, [event]).model_dump()
            return {**base, "choices": [choice]}

        include = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(generation, chunk, include, body.n), media_type="text/event-stream")
    got = await _gather_while_connected(generation, body.n, request)
    choices = [
        ChatChoice(index=c, message=AssistantMessage(content=got.texts[c]), finish_reason=got.reasons[c],
                   logprobs=_chat_logprobs(state.tokenizer, got.tokens.get(c, [])) if logprobs is not None else None)
        for c in range(body.n)
    ]
    return ChatCompletion(id=rid, created=created, model=name, choices=choices, usage=got.usage())


@router.post("/v1/completions", response_model=Completion, responses=_STREAM)
async def completions(body: CompletionRequest, request: Request):
    state = _state(request)
    name = _check_model(state, body.model, state.chat_name)
    texts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not texts or any(not t for t in texts):
        raise ApiError(400, "prompt is empty: give a text, or a list of non-empty texts", param="prompt")
    prompts = [state.tokenizer.encode(t) for t in texts]
    sampling = _sampling(state, body, max(len(p) for p in prompts), body.max_tokens, body.logprobs)
    generation = Generation(state.engine, prompts, sampling)
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    tok = state.tokenizer
    if body.stream:
        def chunk(index, event):
            base = {"id": rid, "object": "text_completion", "created": created, "model": name}
            if isinstance(event, Usage):
                return {**base, "choices": [], "usage": event.model_dump()}
            c = index + event.choice
            if isinstance(event, Finish):
                return {**base, "choices": [{"index": c, "text": "", "finish_reason": event.reason}]}
            if not event.text:
                return None
            return {**base, "choices": [{"index": c, "text": event.text, "finish_reason": None}]}

        include = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(generation, chunk, include, body.n), media_type="text/event-stream")
    got = await _gather_while_connected(generation, body.n, request)
    choices = []
    for c in range(len(texts) * body.n):
        lp = None
        if body.logprobs is not None:
            tokens = got.tokens.get(c, [])
            pieces = [_token_text(tok, t.token) for t in tokens]
            offsets = list(np.cumsum([0, *map(len, pieces)])[:-1] + len(texts[c // body.n]))
            lp = CompletionLogprobs(tokens=pieces, token_logprobs=[t.logprob for t in tokens],
                                    top_logprobs=[{_token_text(tok, i): v for i, v in (t.top or [])} for t in tokens],
                                    text_offset=[int(o) for o in offsets])
        text = (texts[c // body.n] if body.echo else "") + got.texts[c]
        choices.append(CompletionChoice(index=c, text=text, finish_reason=got.reasons[c], logprobs=lp))
    return Completion(id=rid, created=created, model=name, choices=choices, usage=got.usage())


@router.post("/v1/embeddings", response_model=EmbeddingList)
async def embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingList:
    state = _state(request)
    name = _check_model(state, body.model, state.embedding_name)
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts:
        raise ApiError(400, "input is empty: give a text or a list of texts", param="input")
    if len(texts) > 2048:
        raise ApiError(400, f"input holds {len(texts)} texts; at most 2048 a request", param="input")
    dim = state.embedder.encoder.dim
    if body.dimensions is not None and body.dimensions != dim:
        raise ApiError(400, f"dimensions must be {dim} for {name} (it does not shorten its vectors)",
                       param="dimensions")
    try:
        vectors, tokens = await asyncio.to_thread(state.embedder.embed, texts)
    except LmatlasError as e:
        raise ApiError(400, str(e), param="input") from None
    data = []
    for i, v in enumerate(vectors):
        v = np.ascontiguousarray(v, dtype="<f4")
        value = base64.b64encode(v.tobytes()).decode() if body.encoding_format == "base64" else v.tolist()
        data.append(Embedding(index=i, embedding=value))
    return EmbeddingList(data=data, model=name, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))
