"""`lmatlas serve` through OpenAI's own client and plain HTTP, on a tiny random-weight Llama (the
chat model) and the packaged all-MiniLM-L6-v2 (embeddings), served on a free loopback port in a
thread of the test: replies equal generate()'s, streamed text equals the reply, embeddings equal
lmatlas.embed; the errors each come in OpenAI's shape with the status the client maps; the server
keeps serving after each bad request."""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import numpy as np
import pytest

import lmatlas
from lmatlas.cli import main
from lmatlas.serve import ServerConfig
from lmatlas.serve.background import running

from .helpers_serve import build_all, greedy_reply
from .reference import require

openai = require("openai")
KEY = "sekret-key"
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return build_all(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def served(folders, one_thread):
    config = ServerConfig(model=str(folders["chat"]), api_key=KEY, max_tokens=16, max_body=64 * 1024,
                          index=str(folders["index"]), task_models={"fill-mask": str(folders["mlm"])},
                          allowed_origins=["http://example.test"])
    with running(config) as served:
        yield served


@pytest.fixture(scope="module")
def server(served):
    return served.url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=60)


def _post(server, path, body=None, key=KEY, **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if body is not None and not isinstance(body, (bytes, str)):
        kwargs["json"] = body
    elif body is not None:
        kwargs["content"] = body
        headers["Content-Type"] = "application/json"
    return httpx.post(server + path, headers=headers, timeout=60, **kwargs)


def _error(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_models_chat_stream_and_completions(client, folders):
    name = str(folders["chat"])
    assert [m.id for m in client.models.list()] == [name, "all-MiniLM-L6-v2", str(folders["mlm"])]
    reply = client.chat.completions.create(model=name, messages=HELLO, temperature=0, max_tokens=12)
    expected = greedy_reply(folders["chat"], HELLO, 12)
    assert reply.choices[0].message.content == expected
    assert reply.usage.completion_tokens == 12 and reply.usage.total_tokens == reply.usage.prompt_tokens + 12
    pieces, usage = [], None
    for chunk in client.chat.completions.create(model=name, messages=HELLO, temperature=0, max_tokens=12,
                                                stream=True, stream_options={"include_usage": True}):
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        else:
            usage = chunk.usage
    assert "".join(pieces) == expected and len(pieces) > 3
    assert usage.model_dump() == reply.usage.model_dump()
    # max_completion_tokens, the newer name, counts the same way.
    short = client.chat.completions.create(model=name, messages=HELLO, temperature=0, max_completion_tokens=4)
    assert short.choices[0].finish_reason == "length" and expected.startswith(short.choices[0].message.content)
    done = client.completions.create(model=name, prompt="Once upon a time", temperature=0, max_tokens=6)
    assert done.choices[0].text and done.usage.completion_tokens == 6


def test_completions_of_several_prompts_streamed_and_not(client, folders):
    name = str(folders["chat"])
    prompts = ["Once upon a time", "The weather today"]
    whole = client.completions.create(model=name, prompt=prompts, temperature=0, max_tokens=6, echo=True)
    assert [c.index for c in whole.choices] == [0, 1] and whole.usage.completion_tokens == 12
    texts = {0: "", 1: ""}
    for chunk in client.completions.create(model=name, prompt=prompts, temperature=0, max_tokens=6, stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert [prompts[i] + texts[i] for i in (0, 1)] == [c.text for c in whole.choices]
    # Log-probabilities come with each streamed chat token too.
    chunks = [c for c in client.chat.completions.create(model=name, messages=HELLO, temperature=0, max_tokens=4,
                                                         stream=True, logprobs=True, top_logprobs=2) if c.choices]
    scored = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert len(scored) == 4 and all(len(t.top_logprobs) == 2 for t in scored)


def test_n_with_a_seed_stop_penalties_and_logprobs(client, folders):
    name = str(folders["chat"])
    ask = dict(model=name, messages=HELLO, n=2, seed=7, temperature=1.0, max_tokens=10)
    first, again = client.chat.completions.create(**ask), client.chat.completions.create(**ask)
    texts = [c.message.content for c in first.choices]
    assert texts == [c.message.content for c in again.choices] and texts[0] != texts[1]
    assert [c.index for c in first.choices] == [0, 1] and first.usage.completion_tokens == 20
    other = client.chat.completions.create(**{**ask, "seed": 8})
    assert [c.message.content for c in other.choices] != texts
    # A stop string ends the reply before it.
    full = greedy_reply(folders["chat"], HELLO, 12)
    stop = full[len(full) // 2: len(full) // 2 + 3]
    cut = client.chat.completions.create(model=name, messages=HELLO, temperature=0, max_tokens=12, stop=[stop])
    assert cut.choices[0].message.content == full[: full.index(stop)] and cut.choices[0].finish_reason == "stop"
    # A large frequency penalty forbids repeating a token; the greedy reply changes if it repeats.
    penalised = client.chat.completions.create(model=name, messages=HELLO, temperature=0, max_tokens=12,
                                               frequency_penalty=2.0, presence_penalty=2.0)
    assert penalised.choices[0].message.content
    scored = client.chat.completions.create(model=name, messages=HELLO, temperature=0, max_tokens=5, logprobs=True,
                                            top_logprobs=3)
    content = scored.choices[0].logprobs.content
    assert len(content) == 5
    for item in content:
        tops = [t.logprob for t in item.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and item.logprob == pytest.approx(tops[0])
        assert item.token == item.top_logprobs[0].token  # greedy: the most likely token


def test_embeddings_base64_and_float_equal_lmatlas_embed(client):
    texts = ["A cat sleeps on the mat.", "Rockets reach orbit."]
    expected = lmatlas.embed(texts)
    default = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # the client asks for base64
    floats = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, encoding_format="float")
    for got in (default, floats):
        np.testing.assert_allclose(np.array([d.embedding for d in got.data]), expected, atol=1e-5)
    assert default.usage.prompt_tokens > 0


def test_the_client_sees_openai_errors(client, server, folders):
    wrong = openai.OpenAI(base_url=server + "/v1", api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    with pytest.raises(openai.UnprocessableEntityError, match="temperature"):
        client.chat.completions.create(model=str(folders["chat"]), messages=HELLO, temperature=5)
    with pytest.raises(openai.BadRequestError, match="max_tokens 500 goes beyond the model's context of 256"):
        client.chat.completions.create(model=str(folders["chat"]), messages=HELLO, max_tokens=500)


def test_bad_requests_get_one_clear_4xx_and_the_server_keeps_serving(server):
    chat = "/v1/chat/completions"
    assert "not valid JSON" in _error(_post(server, chat, b'{"messages": [}'), 400)["message"]
    assert _error(_post(server, chat, {"model": "x"}), 422)["message"] == "messages is required"
    wrong_type = _error(_post(server, chat, {"messages": "hello"}), 422)
    assert wrong_type["param"] == "messages"
    assert _error(_post(server, chat, {"messages": [{"role": "user", "content": 3}]}), 422)["param"].startswith(
        "messages.0.content")
    assert _error(_post(server, chat, {"messages": []}), 422)["param"] == "messages"
    assert _error(_post(server, chat, {"messages": HELLO, "max_tokens": 10_000}), 400)["param"] == "max_tokens"
    assert "unknown task 'fill-mask-please'" in _error(_post(server, "/models/fill-mask-please", {"inputs": "x"}),
                                                      404)["message"]
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 70_000}]})
    assert "over the server's limit" in _error(_post(server, chat, big), 413)["message"]
    assert _error(_post(server, "/v1/nowhere", {}), 404)["message"] == "no route POST /v1/nowhere"
    assert _error(_post(server, chat, {"messages": HELLO}, key=None), 401)["code"] == "invalid_api_key"
    ok = _post(server, chat, {"messages": HELLO, "max_tokens": 3})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3


def test_a_full_queue_is_429_with_retry_after(server, served):
    state = served.state
    state.engine.max_queue = 0
    try:
        error = _post(server, "/v1/chat/completions", {"messages": HELLO, "max_tokens": 3})
        assert _error(error, 429)["type"] == "rate_limit_error" and error.headers["retry-after"] == "1"
    finally:
        state.engine.max_queue = 64


def test_a_request_past_the_timeout_is_504(client, served, folders, monkeypatch):
    engine = served.state.engine
    real = engine._forward

    def slow(tokens, threads):
        time.sleep(0.02)
        return real(tokens, threads)

    monkeypatch.setattr(engine, "_forward", slow)
    monkeypatch.setattr(engine, "timeout", 0.3)
    with pytest.raises(openai.InternalServerError, match="longer than the server's timeout of 0.3 s") as caught:
        client.chat.completions.create(model=str(folders["chat"]), messages=HELLO, max_tokens=100)
    assert caught.value.status_code == 504


def test_an_error_in_a_stream_is_an_event_then_done(server, served, monkeypatch):
    engine = served.state.engine
    real = engine._forward
    calls = {"n": 0}

    def failing(tokens, threads):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("a broken step")
        return real(tokens, threads)

    monkeypatch.setattr(engine, "_forward", failing)
    response = _post(server, "/v1/chat/completions", {"messages": HELLO, "max_tokens": 10, "stream": True})
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["message"] == "generation failed: a broken step"
    assert json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"


def test_replies_under_concurrency_equal_the_same_requests_alone(client, served, folders):
    name = str(folders["chat"])
    asks = [([{"role": "user", "content": f"Tell me about {topic}."}], n) for topic, n in
            [("cats", 9), ("the sea", 14), ("rockets and the moon", 5), ("x", 12), ("Paris in spring", 16),
             ("bread", 7)]]
    alone = [client.chat.completions.create(model=name, messages=m, temperature=0, max_tokens=n)
             .choices[0].message.content for m, n in asks]
    engine = served.state.engine
    before = engine.steps
    together: list = [None] * len(asks)
    start = threading.Barrier(len(asks))

    def ask(i):
        start.wait()
        m, n = asks[i]
        together[i] = client.chat.completions.create(model=name, messages=m, temperature=0,
                                                     max_tokens=n).choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(asks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert together == alone
    assert max(list(engine.sizes)[before - engine.steps:]) > 1  # they did share steps


def test_a_client_gone_mid_stream_leaves_the_batch_at_the_next_step(server, served, monkeypatch):
    engine = served.state.engine
    real = engine._forward

    def slow(tokens, threads):  # slow steps, so that both streams overlap for long
        time.sleep(0.02)
        return real(tokens, threads)

    monkeypatch.setattr(engine, "_forward", slow)
    drops = len(engine.drops)
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"messages": HELLO, "max_tokens": 120, "stream": True, "temperature": 0}
    kept: list[str] = []

    def keep_reading():
        with httpx.stream("POST", server + "/v1/chat/completions", json=body, headers=headers, timeout=60) as r:
            kept.extend(r.iter_lines())

    other = threading.Thread(target=keep_reading)
    other.start()
    with httpx.stream("POST", server + "/v1/chat/completions", json=body, headers=headers, timeout=60) as r:
        lines = r.iter_lines()
        for _ in range(6):
            next(lines)
    other.join(60)
    step, left = engine.drops[drops]
    assert left == 1
    assert engine.sizes[step - engine.steps] == 1 and engine.sizes[step - 1 - engine.steps] == 2
    finished = json.loads([line for line in kept if line.startswith("data: {")][-1][6:])
    assert finished["choices"][0]["finish_reason"] in ("length", "stop")


def test_a_client_gone_before_a_whole_reply_leaves_the_batch(server, served, monkeypatch):
    """A non-streamed request whose client gives up: its row leaves the batch within a poll and a
    step, not at the end of its max_tokens."""
    engine = served.state.engine
    real = engine._forward

    def slow(tokens, threads):
        time.sleep(0.05)
        return real(tokens, threads)

    monkeypatch.setattr(engine, "_forward", slow)
    drops, steps = len(engine.drops), engine.steps
    body = {"messages": HELLO, "max_tokens": 200, "temperature": 0}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                   timeout=1.0)
    deadline = time.time() + 20
    while len(engine.drops) == drops and time.time() < deadline:
        time.sleep(0.05)
    assert len(engine.drops) > drops, "the request was not cancelled"
    step, left = engine.drops[drops]
    assert left == 0 and step - steps < 100  # long before its 200 tokens


def test_tasks_search_health_metrics_cors_and_the_log(server, folders, caplog):
    caplog.set_level(logging.INFO, logger="lmatlas.serve")
    text = "Paris is the [MASK] of France."
    filled = _post(server, "/models/fill-mask", {"inputs": text, "parameters": {"top_k": 3}})
    assert filled.status_code == 200
    expected = lmatlas.pipeline("fill-mask", str(folders["mlm"]))(text, top_k=3)
    assert [x["token_str"] for x in filled.json()] == [x["token_str"] for x in expected]
    similar = _post(server, "/models/sentence-similarity",
                    {"inputs": {"source_sentence": "a cat", "sentences": ["a kitten", "a rocket"]}}).json()
    assert len(similar) == 2 and similar[0] > similar[1]
    labels = _post(server, "/models/zero-shot-classification",
                   {"inputs": "The rocket reached orbit.", "parameters": {"candidate_labels": ["space", "cooking"]}})
    assert labels.json()["labels"][0] == "space"
    hits = _post(server, "/search", {"query": "Which animal purrs?", "k": 2}).json()["hits"]
    assert hits[0]["source"].endswith("cats.md") and hits[0]["line"] >= 1
    assert httpx.get(server + "/health").json() == {"status": "ok", "message": None}
    metrics = httpx.get(server + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert 'lmatlas_requests_total{route="/models/{task:path}",status="200"}' in metrics
    for name in ("lmatlas_queue_length", "lmatlas_batch_size", "lmatlas_time_to_first_token_seconds_count",
                 "lmatlas_generated_tokens_total"):
        assert name in metrics
    assert httpx.get(server + "/metrics").status_code == 401
    preflight = httpx.options(server + "/v1/chat/completions", headers={
        "Origin": "http://example.test", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.headers["access-control-allow-origin"] == "http://example.test"
    assert any('"POST /search" 200' in r.getMessage() for r in caplog.records)


def test_health_is_503_while_loading():
    from starlette.testclient import TestClient

    from lmatlas.serve import create_app

    with TestClient(create_app(ServerConfig(), load=False)) as client:
        assert client.get("/health").status_code == 503
        busy = client.get("/v1/models")
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"


@pytest.mark.parametrize("flags, message", [
    (["--task-model", "fill-mask"], "--task-model fill-mask: give TASK=MODEL, e.g. fill-mask=google-bert/bert-base-uncased"),
    (["--max-concurrent", "0"], "--max-concurrent must be at least 1, not 0"),
    (["--timeout", "0"], "--timeout must be positive, not 0.0"),
    (["--index", "/nonexistent/index"], "--index /nonexistent/index: no search index there (build one with "
                                        "`lmatlas search build`)"),
])  # fmt: skip
def test_serve_flags_that_cannot_work(flags, message, capsys):
    assert main(["serve", *flags]) == 1
    assert capsys.readouterr().err == f"lmatlas: error: {message}\n"


def test_embedding_requests_that_arrive_together_share_a_batch(client, served, monkeypatch):
    embedder = served.state.embedder
    real, release = embedder.encoder.encode, threading.Event()

    def held(texts, **kwargs):  # the first batch waits while the others arrive
        if texts == ["first"]:
            release.wait(30)
        return real(texts, **kwargs)

    monkeypatch.setattr(embedder.encoder, "encode", held)
    batches = len(embedder.batches)
    results = {}

    def ask(text):
        results[text] = client.embeddings.create(model="all-MiniLM-L6-v2", input=[text], encoding_format="float")

    first = threading.Thread(target=ask, args=("first",))
    first.start()
    while len(embedder.batches) == batches:
        time.sleep(0.01)
    others = [threading.Thread(target=ask, args=(t,)) for t in ("a cat", "a dog", "a rocket")]
    for t in others:
        t.start()
    while embedder.jobs.qsize() < 3:
        time.sleep(0.01)
    release.set()
    for t in [first, *others]:
        t.join(60)
    assert list(embedder.batches)[batches:] == [1, 3]
    expected = lmatlas.embed(["a cat", "a dog", "a rocket"])
    got = [results[t].data[0].embedding for t in ("a cat", "a dog", "a rocket")]
    np.testing.assert_allclose(np.array(got), expected, atol=1e-5)


def test_shutdown_lets_running_streams_finish(folders, monkeypatch):
    lines: list[str] = []
    with running(ServerConfig(model=str(folders["chat"]))) as served:
        engine = served.state.engine
        real = engine._forward

        def slow(tokens, threads):
            time.sleep(0.02)
            return real(tokens, threads)

        monkeypatch.setattr(engine, "_forward", slow)
        body = {"messages": HELLO, "max_tokens": 40, "stream": True}

        def read():
            with httpx.stream("POST", served.url + "/v1/chat/completions", json=body, timeout=60) as r:
                lines.extend(r.iter_lines())

        reader = threading.Thread(target=read)
        reader.start()
        while engine.steps < 5:
            time.sleep(0.01)
    # The block has ended (the server has stopped) only after the stream ended, whole.
    reader.join(60)
    events = [line[6:] for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["choices"][0]["finish_reason"] == "length"
    assert not engine.thread.is_alive()
