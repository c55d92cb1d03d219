"""The FastAPI application: the routes (``openai_api``, ``tasks_api``), ``/health``,
``/metrics``, the playground at ``/``, and what every request goes through — the body size limit,
the API key, CORS, a log line and the metrics.

The middleware is plain ASGI rather than Starlette's ``BaseHTTPMiddleware``, which would sit
between a stream and its client and hide the client's disconnect (the decode loop must hear it
to drop the request's rows).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import threading
import time
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, JSONResponse, Response

from .errors import ApiError
from .metrics import CONTENT_TYPE, Metrics
from .schemas import ErrorResponse, Health
from .state import ServerConfig, State

log = logging.getLogger("lmatlas.serve")

# Reachable without the API key: the health check, and the playground's own files (the page asks
# for the key and sends it with every call it makes).
OPEN_PATHS = ("/health", "/", "/favicon.ico")
OPEN_PREFIXES = ("/static/",)
_ERRORS = {status: {"model": ErrorResponse, "description": text} for status, text in [
    (400, "a bad request"), (401, "a missing or wrong API key"), (404, "an unknown model or task"),
    (413, "a body over the size limit"), (422, "a body that does not fit the schema"),
    (429, "the queue is full (see Retry-After)"), (500, "a failure of the server"),
    (503, "the models are loading or the server is stopping"),
]}  # fmt: skip


def create_app(config: ServerConfig | None = None, load: bool = True) -> FastAPI:
    """The server's application; with ``load``, its models load in a thread when it starts
    (``/health`` answers 503 until they are ready)."""
    config = config or ServerConfig()
    metrics = Metrics()
    state = State(config, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if load:
            threading.Thread(target=state.load, name="lmatlas-serve-load", daemon=True).start()
        yield
        # Uvicorn has let the running requests finish; the loop ends once its rows are done.
        state.stop()

    app = FastAPI(title="lmatlas", version="0.1.0", lifespan=lifespan, responses=_ERRORS,
                  description="OpenAI-compatible and Inference API routes over lmatlas' models.")
    app.state.lmatlas = state
    _handlers(app)
    from .openai_api import router as openai_router
    from .tasks_api import router as tasks_router

    app.include_router(openai_router)
    app.include_router(tasks_router)
    _operations(app, state, metrics)
    # The size limit and the key are checked before anything reads the body; CORS wraps them
    # (added last, it is outermost), so that a browser can read a 401 too.
    app.add_middleware(Guard, config=config, metrics=metrics)
    if config.allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=config.allowed_origins, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["Retry-After"])
    _openapi_errors(app)
    return app


def _operations(app: FastAPI, state: State, metrics: Metrics) -> None:
    static = resources.files("lmatlas.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", include_in_schema=False)
    def playground() -> FileResponse:
        return FileResponse(str(static / "index.html"))

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    def health():
        body = Health(status=state.status, message=state.message)
        return JSONResponse(body.model_dump(), status_code=200 if state.status == "ok" else 503)

    @app.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}})
    def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE)


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        errors = e.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return ApiError(400, f"the body is not valid JSON ({first.get('ctx', {}).get('error', 'a syntax error')})",
                            code="invalid_json").response()
        where = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(where) or None
        message = first.get("msg", "invalid request")
        if first.get("type") == "missing":
            message = f"{param} is required" if param else "the body is required"
        elif param:
            message = f"{param}: {message}"
        return ApiError(422, message, param=param, code=first.get("type")).response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        message = e.detail if isinstance(e.detail, str) else "error"
        if e.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        elif e.status_code == 405:
            message = f"{request.url.path} does not take {request.method}"
        return ApiError(e.status_code, message, headers=getattr(e, "headers", None) or {}).response()

    @app.exception_handler(Exception)
    async def failure(request: Request, e: Exception):
        log.exception("error answering %s %s", request.method, request.url.path)
        return ApiError(500, f"the server failed: {type(e).__name__}: {e}").response()


def _openapi_errors(app: FastAPI) -> None:
    """The schema says what the server sends for a validation error: OpenAI's error shape."""
    build = app.openapi

    def openapi():
        if app.openapi_schema is None:
            schema = build()
            ref = {"$ref": "#/components/schemas/ErrorResponse"}
            for item in schema.get("paths", {}).values():
                for op in item.values():
                    r = op.get("responses", {}).get("422")
                    if r is not None:
                        r["content"] = {"application/json": {"schema": ref}}
            schema.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
            schema.get("components", {}).get("schemas", {}).pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


class _TooLarge(Exception):
    pass


class Guard:
    """Every request: the body size limit (413), the API key (401), then the metrics and a log
    line when the response ends."""

    def __init__(self, app, config: ServerConfig, metrics: Metrics):
        self.app, self.config, self.metrics = app, config, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = {"code": 500}

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await _send_error(refusal, sending)
                return
            limit, seen = self.config.max_body, {"n": 0}

            async def receiving():
                message = await receive()
                if message["type"] == "http.request":
                    seen["n"] += len(message.get("body", b""))
                    if seen["n"] > limit:
                        raise _TooLarge
                return message

            try:
                await self.app(scope, receiving, sending)
            except _TooLarge:
                await _send_error(self._too_large(), sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or ("/static" if scope["path"].startswith("/static/") else "unmatched")
            elapsed = time.perf_counter() - start
            self.metrics.requests.labels(path, str(status["code"])).inc()
            self.metrics.latency.labels(path).observe(elapsed)
            client = scope.get("client") or ("-", 0)
            log.info('%s "%s %s" %d %.0f ms', client[0], scope["method"], scope["path"], status["code"],
                     elapsed * 1000)

    def _too_large(self) -> ApiError:
        return ApiError(413, f"the body is over the server's limit of {self.config.max_body} bytes")

    def _refusal(self, scope) -> ApiError | None:
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.config.max_body:
            return self._too_large()
        key = self.config.api_key
        path = scope["path"]
        if key and scope["method"] != "OPTIONS" and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES):
            given = headers.get(b"authorization", b"").decode("latin-1")
            token = given[7:] if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), key.encode()):
                what = "a wrong API key" if token else "no API key (send it as Authorization: Bearer KEY)"
                return ApiError(401, f"the request has {what}", code="invalid_api_key")
        return None


async def _send_error(error: ApiError, send) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["create_app"]
