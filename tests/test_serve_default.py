"""`lmatlas serve` with its defaults: the packaged SmolLM2-135M-Instruct (a Q4_1 GGUF file) as
the chat model (its Q4_1 matrices kept in their blocks, decoded through the integer kernels) and
all-MiniLM-L6-v2 for embeddings; its greedy reply through OpenAI's client is generate()'s on the
same chat-templated prompt."""

from __future__ import annotations

import torch

from lmatlas.chat import apply_chat_template
from lmatlas.serve import ServerConfig
from lmatlas.serve.background import running

from .reference import require

openai = require("openai")


def test_the_default_models_answer(one_thread):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    with running(ServerConfig(max_tokens=8)) as served:
        client = openai.OpenAI(base_url=served.url + "/v1", api_key="none", max_retries=0, timeout=300)
        assert [m.id for m in client.models.list()] == ["SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"]
        reply = client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=messages, temperature=0)
        # The same weights, through generate() (the server is idle meanwhile).
        model, tok = served.state.engine.model, served.state.tokenizer
        ids = torch.tensor([tok.encode(apply_chat_template(tok, messages, add_generation_prompt=True),
                                       add_special_tokens=False)])
        out = model.generate(ids, max_new_tokens=8, do_sample=False)
        expected = tok.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)
        assert reply.choices[0].message.content == expected and expected.strip()
        vector = client.embeddings.create(model="all-MiniLM-L6-v2", input="Paris").data[0].embedding
        assert len(vector) == 384
