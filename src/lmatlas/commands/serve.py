"""`lmatlas serve`: the OpenAI-compatible server, the task routes and the playground."""

from __future__ import annotations

from ._generation import add_quantization_options

HELP = "serve the chat and embedding models over OpenAI's HTTP API, with a web playground"
DESCRIPTION = (
    "Serve a chat model (default SmolLM2-135M-Instruct) and a sentence-embedding model (default "
    "all-MiniLM-L6-v2) over OpenAI's routes (/v1/chat/completions, /v1/completions, /v1/embeddings, "
    "/v1/models), the Inference API's task routes (/models/TASK), /search over --index, /health, /metrics, "
    "and a playground at /. Concurrent requests share one decode batch."
)


def arguments(p) -> None:
    p.add_argument("--model", "-m", default=None, help="chat model: GGUF file, folder or hub id "
                   "(default: SmolLM2-135M-Instruct)")
    add_quantization_options(p)  # of the chat model
    p.add_argument("--embedding-model", default=None, help="sentence-embedding model (default: all-MiniLM-L6-v2)")
    p.add_argument("--index", default=None, help="a search index folder (`lmatlas search build`) for /search")
    p.add_argument("--task-model", action="append", default=[], metavar="TASK=MODEL",
                   help="the model of a task route /models/TASK (repeatable), e.g. fill-mask=bert-base-uncased")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require this key as a Bearer token on every route but "
                   "/health and the playground's page")
    p.add_argument("--max-concurrent", type=int, default=16, help="rows decoded at once (default 16)")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond that; more get 429 "
                   "(default 64)")
    p.add_argument("--allowed-origins", nargs="+", default=[], metavar="ORIGIN",
                   help="web origins allowed by CORS (default: none)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a request may take (default 600)")
    p.add_argument("--max-tokens", type=int, default=512, help="a reply's length when a request names none "
                   "(default 512)")
    p.set_defaults(func=run)


def config(args):
    """The server's settings from the flags; one sentence for a flag that cannot work."""
    from ..errors import LmatlasError
    from ..serve import ServerConfig

    tasks = {}
    for item in args.task_model:
        task, sep, model = item.partition("=")
        if not sep or not task or not model:
            raise LmatlasError(f"--task-model {item}: give TASK=MODEL, e.g. fill-mask=google-bert/bert-base-uncased")
        tasks[task] = model
    for flag, value, low in (("--port", args.port, 0), ("--max-concurrent", args.max_concurrent, 1),
                             ("--max-queue", args.max_queue, 0), ("--max-tokens", args.max_tokens, 1)):
        if value < low:
            raise LmatlasError(f"{flag} must be at least {low}, not {value}")
    if args.timeout <= 0:
        raise LmatlasError(f"--timeout must be positive, not {args.timeout}")
    if args.port > 65535:
        raise LmatlasError(f"--port must be at most 65535, not {args.port}")
    if args.index is not None:
        from ..search import Index

        if not Index(args.index).exists():
            raise LmatlasError(f"--index {args.index}: no search index there (build one with `lmatlas search build`)")
    return ServerConfig(model=args.model, embedding_model=args.embedding_model, index=args.index, task_models=tasks,
                        host=args.host, port=args.port, api_key=args.api_key, max_concurrent=args.max_concurrent,
                        max_queue=args.max_queue, allowed_origins=args.allowed_origins, timeout=args.timeout,
                        max_tokens=args.max_tokens, quantize=args.quantize, dequantize=args.dequantize)


def run(args) -> int:
    from ..serve import serve

    serve(config(args))
    return 0
