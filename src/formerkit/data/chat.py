"""Chat templates: the Jinja template a checkpoint ships in ``tokenizer_config.json`` (or
``chat_template.jinja``) rendered over a list of messages as ``transformers``'
``apply_chat_template`` renders it: a sandboxed environment with ``trim_blocks`` and
``lstrip_blocks``, loop controls, a ``tojson`` filter that does not escape HTML, and the
``raise_exception`` and ``strftime_now`` helpers. Templates are untrusted text, never code.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime
from pathlib import Path
from typing import Any

TEMPLATE_FILE = "chat_template.jinja"


def read_chat_template(directory: str | Path) -> str | None:
    """The directory's chat template (``chat_template.jinja``, else ``chat_template`` in
    tokenizer_config.json; of a list of named templates, the one named ``default``), or None."""
    directory = Path(directory)
    if (directory / TEMPLATE_FILE).is_file():
        return (directory / TEMPLATE_FILE).read_text(encoding="utf-8")
    config_file = directory / "tokenizer_config.json"
    if not config_file.is_file():
        return None
    try:
        template = json.loads(config_file.read_text(encoding="utf-8")).get("chat_template")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise ValueError(f"{config_file} is not a valid JSON object: {err}") from None
    if isinstance(template, list):
        named = {entry.get("name"): entry.get("template") for entry in template
                 if isinstance(entry, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


@functools.lru_cache(maxsize=16)
def _compile(template: str) -> Any:
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
               separators: Any = None, sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[loopcontrols])
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return environment.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as err:
        raise ValueError(f"the chat template does not parse: {err}") from None


def render_chat(template: str, messages: list[dict[str, Any]], *,
                add_generation_prompt: bool = True, **variables: Any) -> str:
    """The text the template makes of ``messages`` (``[{"role": ..., "content": ...}]``).

    Args:
        add_generation_prompt: end with the header of the assistant's turn.
        **variables: further template variables (``bos_token``, ``eos_token``, ``tools``...).
    """
    import jinja2

    if not isinstance(messages, list) or not all(
            isinstance(m, dict) and "role" in m for m in messages):
        raise ValueError("messages must be a list of {'role': ..., 'content': ...} dicts")
    try:
        return _compile(template).render(messages=messages,
                                         add_generation_prompt=add_generation_prompt,
                                         **variables)
    except jinja2.exceptions.TemplateError as err:
        raise ValueError(f"the chat template failed: {err}") from None
