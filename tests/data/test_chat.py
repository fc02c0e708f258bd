"""Chat templates render as transformers' apply_chat_template renders them."""

from __future__ import annotations

import json

import pytest

from formerkit.data.chat import read_chat_template, render_chat
from formerkit.data.tokenizers import load_tokenizer, train_byte_bpe

transformers = pytest.importorskip("transformers")

# The shapes of two widely used templates (Llama 3 and Qwen2/ChatML), with the features that
# trip simple renderers: whitespace control, loop controls, namespace, tojson, bos_token.
LLAMA3 = (
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{- message['content'] | trim }}{{- '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}")
CHATML = """{% set ns = namespace(system=false) %}
{% for message in messages %}
    {% if message.role == 'system' %}{% set ns.system = true %}{% endif %}
    {% if loop.first and not ns.system %}<|im_start|>system
You are helpful.<|im_end|>
{% endif %}
<|im_start|>{{ message.role }}
{{ message.content }}{% if message.meta is defined %} {{ message.meta | tojson }}{% endif %}\
<|im_end|>
    {% if loop.index > 10 %}{% break %}{% endif %}
{% endfor %}
{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""
MESSAGES = [{"role": "user", "content": "  Hello <b>there</b> \u00e9  "},
            {"role": "assistant", "content": "Hi.", "meta": {"x": "<&>"}},
            {"role": "user", "content": "Tell me a joke."}]


@pytest.fixture
def model_dir(tmp_path):
    tokenizer = train_byte_bpe(["hello there, tell me a joke. <|im_start|> user"] * 5, 300,
                               special_tokens=["<s>", "</s>"])
    tokenizer.save(tmp_path)
    return tmp_path


@pytest.mark.parametrize("template", [LLAMA3, CHATML])
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_render_matches_transformers(model_dir, template, generation_prompt):
    config_file = model_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.update(chat_template=template, bos_token="<s>", eos_token="</s>")
    config_file.write_text(json.dumps(config))
    reference = transformers.AutoTokenizer.from_pretrained(model_dir)
    expected = reference.apply_chat_template(MESSAGES, tokenize=False,
                                             add_generation_prompt=generation_prompt)
    ours = load_tokenizer(model_dir)
    assert ours.chat_template == template == read_chat_template(model_dir)
    got = ours.apply_chat_template(MESSAGES, add_generation_prompt=generation_prompt)
    assert got == expected
    ids = ours.apply_chat_template(MESSAGES, tokenize=True,
                                   add_generation_prompt=generation_prompt)
    assert ids == reference(expected, add_special_tokens=False)["input_ids"]


def test_template_file_and_named_templates_and_errors(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": [{"name": "tool_use", "template": "T"},
                           {"name": "default", "template": "D"}]}))
    assert read_chat_template(tmp_path) == "D"
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0].content }}")
    assert read_chat_template(tmp_path) == "{{ messages[0].content }}"
    with pytest.raises(ValueError, match="list of"):
        render_chat("x", [{"content": "no role"}])
    with pytest.raises(ValueError, match="does not parse"):
        render_chat("{% for %}", MESSAGES)
    with pytest.raises(ValueError, match="only user turns"):
        render_chat("{{ raise_exception('only user turns') }}", MESSAGES)
    with pytest.raises(Exception, match="unsafe|access"):
        render_chat("{{ ''.__class__.__mro__ }}", MESSAGES)


def test_tokenizer_without_template_is_a_clear_error(model_dir):
    with pytest.raises(ValueError, match="no chat template"):
        load_tokenizer(model_dir).apply_chat_template(MESSAGES)
