"""Chat templates: the Jinja template a tokenizer folder carries, and a conversation rendered with
it as transformers' ``apply_chat_template`` renders it (the same sandbox, filters and globals), so
that a chat model reads the prompt it was trained on.

``lmatlas generate --chat`` and the text-generation pipeline both format chats here.
"""

from __future__ import annotations

import functools
import json
from copy import deepcopy
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import LmatlasError
from .files import read_json, read_text

# transformers marks the end of the final message with this text to find where to cut the
# rendered chat when the model is to continue that message.
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "
# The keywords the renderer itself sets; a caller's template variables may not.
_RESERVED = ("messages", "add_generation_prompt")


def read_chat_template(folder: str | Path, config: dict | None = None) -> str | dict[str, str] | None:
    """The chat template(s) of a tokenizer folder, where transformers looks: chat_template.jinja
    and additional_chat_templates/NAME.jinja (the files win), else tokenizer_config.json's
    ``chat_template`` (a string, or a list of ``{"name", "template"}``). Several templates come
    back as a dict by name; none as None. ``config`` is tokenizer_config.json when already read."""
    folder = Path(folder)
    files = {}
    if (folder / "chat_template.jinja").is_file():
        files["default"] = read_text(folder / "chat_template.jinja")
    extra = folder / "additional_chat_templates"
    if extra.is_dir():
        for path in sorted(extra.glob("*.jinja")):
            files[path.name.removesuffix(".jinja")] = read_text(path)
    if files:
        return files["default"] if list(files) == ["default"] else files
    if config is None:
        file = folder / "tokenizer_config.json"
        config = read_json(file) if file.is_file() else {}
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        return {k: v for k, v in named.items() if isinstance(k, str) and isinstance(v, str)} or None
    return template if isinstance(template, str) and template else None


def template_of(tokenizer: Any, chat_template: str | None = None) -> str:
    """The template to render with, as transformers' ``get_chat_template`` picks it: the one
    given (or, with several, the one it names), else the tokenizer's own (its "default" when it
    has several)."""
    own = getattr(tokenizer, "chat_template", None)
    if chat_template is not None and not isinstance(chat_template, str):
        raise LmatlasError(f"chat_template must be a Jinja template or a template's name, not {chat_template!r}")
    if isinstance(own, dict):
        if chat_template is not None:
            return own.get(chat_template, chat_template)
        if "default" not in own:
            raise LmatlasError(
                f"the tokenizer has several chat templates ({', '.join(sorted(own))}) and none is the default; "
                "name one with chat_template"
            )
        return own["default"]
    if chat_template is not None:
        return chat_template
    if not own:
        name = getattr(tokenizer, "name_or_path", "")
        raise LmatlasError(
            f"the tokenizer{f' of {name}' if name else ''} has no chat template (no chat_template in "
            "tokenizer_config.json, no chat_template.jinja), so it cannot format chat messages"
        )
    return own


def check_messages(messages: Any) -> list[dict]:
    """A conversation: a non-empty list of dicts, each with a "role" and a "content"."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise LmatlasError("a chat is a non-empty list of messages, each a dict with 'role' and 'content'")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise LmatlasError(f"message {i} of the chat is a {type(message).__name__}, not a dict with 'role' and 'content'")
        missing = [key for key in ("role", "content") if key not in message]
        if missing:
            raise LmatlasError(
                f"message {i} of the chat has no {' and no '.join(repr(k) for k in missing)}; "
                "each message is a dict with 'role' and 'content'"
            )
    return list(messages)


def apply_chat_template(
    tokenizer: Any,
    messages: list[dict],
    chat_template: str | None = None,
    add_generation_prompt: bool = False,
    continue_final_message: bool = False,
    **variables: Any,
) -> str:
    """The conversation as text, with the tokenizer's template (or ``chat_template``) and its
    special tokens (``eos_token``, ...) as template variables, as transformers'
    ``tokenizer.apply_chat_template(..., tokenize=False)``."""
    template = template_of(tokenizer, chat_template)
    special = dict(getattr(tokenizer, "special_tokens_map", {}) or {})
    return render_chat(
        messages, template, add_generation_prompt=add_generation_prompt,
        continue_final_message=continue_final_message, **{**special, **variables},
    )


def render_chat(
    messages: list[dict],
    template: str,
    add_generation_prompt: bool = False,
    continue_final_message: bool = False,
    tools: list[dict] | None = None,
    documents: list[dict] | None = None,
    **variables: Any,
) -> str:
    """``messages`` rendered with ``template``. ``add_generation_prompt`` ends the text where the
    assistant's next message starts; ``continue_final_message`` ends it inside the last message,
    for the model to go on with it. ``variables`` are further template variables."""
    messages = check_messages(messages)
    if continue_final_message and add_generation_prompt:
        raise LmatlasError("continue_final_message and add_generation_prompt cannot both be set")
    clash = [k for k in _RESERVED if k in variables]
    if clash:
        raise LmatlasError(f"{clash[0]} is set by the chat formatting itself, not as a template variable")
    if tools is not None and not all(isinstance(t, dict) for t in tools):
        raise LmatlasError("tools are given as JSON schemas (dicts); lmatlas does not make schemas from functions")
    if documents is not None and not all(isinstance(d, dict) for d in documents):
        raise LmatlasError("documents must be dicts (with 'title' and 'text')")
    final = None
    if continue_final_message:
        messages = deepcopy(messages)
        final = _tag_final(messages[-1])
    compiled = _compile(template)
    import jinja2  # present: _compile needed it

    try:
        text = compiled.render(
            messages=messages, tools=tools, documents=documents, add_generation_prompt=add_generation_prompt,
            **variables,
        )
    except jinja2.exceptions.TemplateError as e:
        raise LmatlasError(f"the chat template cannot render these messages ({' '.join(str(e).split())})") from None
    if final is None:
        return text
    tag = _CONTINUE_TAG.strip()
    if final.strip() not in text or tag not in text:
        raise LmatlasError(
            "continue_final_message: the final message does not appear whole in the rendered chat "
            "(the chat template changes or drops it), so there is nothing to continue"
        )
    at = text.rindex(tag)
    if text[at : at + len(_CONTINUE_TAG)] == _CONTINUE_TAG:
        return text[:at]
    # The template trimmed the spaces after the message (and the tag's): cut them as well.
    return text[:at].rstrip()


def _tag_final(message: dict) -> str:
    """Mark the end of the final message's text; its text as it was."""
    content = message["content"]
    if isinstance(content, str):
        message["content"] = content + _CONTINUE_TAG
        return content
    for block in reversed(content if isinstance(content, list) else []):
        if isinstance(block, dict) and "text" in block:  # the last text block of a multi-part message
            text = block["text"]
            block["text"] = text + _CONTINUE_TAG
            return text
    raise LmatlasError("continue_final_message: the final message has no text to continue")


def extend_final(message: dict, new: str) -> dict:
    """``message`` with ``new`` text added at the end (its last text block, for a multi-part one)."""
    content = message["content"]
    if isinstance(content, str):
        return {"role": message["role"], "content": content + new}
    blocks = deepcopy(content)
    for block in reversed(blocks):
        if isinstance(block, dict) and "text" in block:
            block["text"] += new
            break
    return {"role": message["role"], "content": blocks}


@functools.lru_cache(maxsize=16)
def _compile(template: str):
    try:
        import jinja2
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise LmatlasError("chat templates need jinja2: pip install jinja2") from None

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Jinja's own tojson escapes HTML characters; templates expect plain JSON.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_generation_extension(), loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateError as e:
        raise LmatlasError(f"the chat template is not valid Jinja ({' '.join(str(e).split())})") from None


@functools.cache
def _generation_extension():
    """``{% generation %}...{% endgeneration %}``: templates mark the assistant's text with it for
    transformers' assistant-token masks; rendering just keeps the text."""
    import jinja2
    from jinja2.ext import Extension

    class Generation(Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_keep"), [], [], body).set_lineno(lineno)

        def _keep(self, caller):
            return caller()

    return Generation
