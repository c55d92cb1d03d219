"""`lmatlas chat`: talk with a chat model in the terminal; the reply streams as it is made and the
conversation is kept (``lmatlas.conversation``).

At a terminal: one message per line; ``/reset`` forgets the conversation, ``/system TEXT`` sets
the system message, ``/save FILE`` writes the messages as JSON, ``/quit`` (or Ctrl-D) leaves;
Ctrl-C stops a reply without leaving. Otherwise (a pipe, a file) the whole input is one message,
answered once.
"""

from __future__ import annotations

import sys

from ..errors import LmatlasError
from ._generation import (
    add_sampling_options, dropped_notice, generation_options, generative_kind, model_source, quantization,
)

HELP = "chat with a model in the terminal: the reply streams, the conversation is kept"
DESCRIPTION = (
    "An interactive chat with a decoder that has a chat template. At a terminal: /reset, /system TEXT, "
    "/save FILE, /quit; Ctrl-C stops a reply. From a pipe or a file: the input is one message, answered once."
)
# Tokens a reply may take unless --max-new-tokens says (or half the model's positions, if fewer).
REPLY_TOKENS = 256


def arguments(p) -> None:
    """The arguments of `lmatlas chat`, on its parser (made by ``lmatlas.cli``)."""
    p.add_argument("--model", "-m", default=None,
                   help="model folder, GGUF file or hub id (default: SmolLM2-135M-Instruct, installed as a package)")
    p.add_argument("--system", default=None, help="a system message first")
    add_sampling_options(p, f"at most this many tokens per reply (default: {REPLY_TOKENS})")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..chat import template_of
    from ..conversation import Conversation
    from ..loader import load
    from ..tokenizer import load_tokenizer

    source = model_source(args.model)
    if generative_kind(source, args.model) != "decoder":
        raise LmatlasError(f"--model {args.model}: an encoder-decoder answers one text at a time; "
                           "chat needs a decoder with a chat template (use lmatlas generate)")
    tokenizer = load_tokenizer(source)
    options = generation_options(args, tokenizer)
    template_of(tokenizer)  # a tokenizer without a chat template fails before the weights load
    model = load(source, head="causal-lm", dtype=args.dtype, **quantization(args))
    # A reply takes at most half the model's positions unless told otherwise, so that a few
    # exchanges fit before the oldest go.
    options.setdefault("max_new_tokens", min(REPLY_TOKENS, model.config.max_positions // 2))
    chat = Conversation(model, tokenizer, args.system, options, on_drop=dropped_notice)
    if not sys.stdin.isatty():
        _say(chat, sys.stdin.read().strip())
        return 0
    while True:
        try:
            line = input("> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if line in ("/quit", "/exit"):
            return 0
        try:
            if not _command(chat, line) and line:
                _say(chat, line)
        except LmatlasError as e:  # a mistake in one message leaves the chat going
            print(f"lmatlas: error: {e}", file=sys.stderr)


def _command(chat, line: str) -> bool:
    """Carry out a /command; False when ``line`` is a message."""
    name, _, rest = line.partition(" ")
    if name == "/reset":
        chat.reset()
        print("(the conversation is forgotten)")
    elif name == "/system":
        chat.system = rest.strip() or None
        print("(system message set)" if chat.system else "(no system message)")
    elif name == "/save":
        if not rest.strip():
            raise LmatlasError("/save needs a file name")
        chat.save(rest.strip())
        print(f"(saved {len(chat.messages)} messages to {rest.strip()})")
    elif name.startswith("/") and name[1:].isalpha():
        raise LmatlasError(f"{name} is not a command; the commands are /reset, /system TEXT, /save FILE, /quit")
    else:
        return False
    return True


def _say(chat, text: str) -> None:
    """Stream the reply to ``text``; Ctrl-C stops it and keeps what was said."""
    try:
        for piece in chat.reply(text):
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:
        sys.stdout.write(" [stopped]")
    sys.stdout.write("\n")
    sys.stdout.flush()
