"""``lmatlas serve``: an OpenAI-compatible HTTP server over lmatlas' models, with the Inference
API's task routes, a search route and a web playground.

- ``app``: the FastAPI application, its middleware (size limit, API key, CORS, log, metrics);
- ``openai_api`` and ``tasks_api``: the routes; ``schemas``: their bodies; ``errors``: OpenAI's
  error shape;
- ``engine``: continuous batching — one decode loop that requests join and leave between steps;
- ``state``: the settings and the models loaded at start; ``metrics``: Prometheus;
- ``static/``: the playground (plain HTML, JavaScript and CSS).
"""

from __future__ import annotations

from .state import ServerConfig


def create_app(config: ServerConfig | None = None, load: bool = True):
    from .app import create_app as make

    return make(config, load)


def serve(config: ServerConfig) -> None:
    """Run the server until interrupted (Ctrl-C or SIGTERM finish the running requests first)."""
    import logging

    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        logging.getLogger("lmatlas.serve").warning(
            "lmatlas serve: listening on %s without --api-key: anyone who reaches it may use it", config.host)
    uvicorn.run(create_app(config), host=config.host, port=config.port, access_log=False, log_level="info",
                timeout_graceful_shutdown=int(config.timeout))


__all__ = ["ServerConfig", "create_app", "serve"]
