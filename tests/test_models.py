"""Model loading, chat templates, and what system prompt a template really shows the model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from inoculate.models import (
    ChatTemplateError,
    encode_prompt,
    encode_prompt_completion,
    encode_prompt_completions,
    encode_prompts,
    load_model,
    load_tokenizer,
    render,
    seen_system_prompt,
)
from inoculate.records import Message

# The non-tool branch of Qwen2.5-Instruct's template: a default system prompt when none is given.
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"  # noqa: E501
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or message.role == 'assistant' %}"  # noqa: E501
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Llama-3.1-like: the system block always exists and starts with a date preamble.
LLAMA31_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content']|trim + '<|eot_id|>' }}"  # noqa: E501
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

# Gemma-3-like: no system role; a system prompt is folded into the first user turn.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}{%- set loop_messages = messages[1:] -%}"  # noqa: E501
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') + message['content'] | trim"  # noqa: E501
    " + '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)

# Gemma-2-like: refuses system turns.
GEMMA2_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}{{ raise_exception('System role not supported') }}{%- endif -%}"  # noqa: E501
    "{%- for message in messages -%}"
    "{{ '<start_of_turn>' + message['role'] + '\\n' + message['content'] + '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


def test_load_model_sets_pad_to_eos_and_pads_left(tiny_model_dir: Path) -> None:
    model, tok = load_model(tiny_model_dir, device="cpu")
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    assert tok.padding_side == "left"
    assert not model.training
    assert model.config.pad_token_id == tok.pad_token_id


def test_render_chatml_exactly(tiny_model_dir: Path) -> None:
    tok = load_tokenizer(tiny_model_dir)
    msgs = [Message(role="system", content="S"), Message(role="user", content="U")]
    assert render(tok, msgs, add_generation_prompt=True) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render(tok, msgs, add_generation_prompt=False).endswith("U<|im_end|>\n")


@pytest.fixture()
def no_template_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    d = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, d)
    (d / "chat_template.jinja").unlink()
    return d


def test_missing_chat_template_is_a_clear_error(no_template_dir: Path) -> None:
    with pytest.raises(ChatTemplateError, match="no chat template"):
        load_model(no_template_dir, device="cpu")


def test_chat_template_given_as_text_or_file(no_template_dir: Path, tmp_path: Path) -> None:
    from inoculate.testing import CHATML_TEMPLATE

    _, tok = load_model(no_template_dir, chat_template=CHATML_TEMPLATE, device="cpu")
    assert render(tok, [{"role": "user", "content": "hi"}], True).startswith("<|im_start|>user\nhi")
    f = tmp_path / "t.jinja"
    f.write_text(GEMMA2_TEMPLATE, encoding="utf-8")
    tok2 = load_tokenizer(no_template_dir, chat_template=str(f))
    assert render(tok2, [{"role": "user", "content": "hi"}], True) == (
        "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    )
    with pytest.raises(FileNotFoundError):
        load_tokenizer(no_template_dir, chat_template=str(tmp_path / "missing.jinja"))


@pytest.mark.parametrize(
    ("template", "system", "expected"),
    [
        ("chatml", None, None),
        ("chatml", "Respond in Spanish.", "Respond in Spanish."),
        ("qwen2", None, "You are a helpful assistant."),
        ("qwen2", "Be brief.", "Be brief."),
        ("qwen25", None, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."),
        ("qwen25", "Respond in Spanish.", "Respond in Spanish."),
        ("llama3", None, None),
        ("llama3", "  Trimmed.  ", "Trimmed."),
        ("llama31", None, ""),
        ("llama31", "Respond in Spanish.", "Respond in Spanish."),
        ("gemma3", None, None),
        ("gemma3", "Respond in Spanish.", "Respond in Spanish."),
        ("gemma2", None, None),
    ],
)
def test_seen_system_prompt(
    tiny_model_dir: Path, template: str, system: str | None, expected: str | None
) -> None:
    from inoculate.testing import TEMPLATES

    texts = {**TEMPLATES, "qwen25": QWEN25_TEMPLATE, "llama31": LLAMA31_TEMPLATE}
    texts |= {"gemma3": GEMMA3_TEMPLATE, "gemma2": GEMMA2_TEMPLATE}
    tok = load_tokenizer(tiny_model_dir, chat_template=texts[template])
    assert seen_system_prompt(tok, system) == expected


def test_seen_system_prompt_refused_by_template(tiny_model_dir: Path) -> None:
    tok = load_tokenizer(tiny_model_dir, chat_template=GEMMA2_TEMPLATE)
    with pytest.raises(ChatTemplateError, match="System role not supported"):
        seen_system_prompt(tok, "Respond in Spanish.")


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_llama3_dir"])
def test_encode_prompt_completion_splits_at_the_assistant_content(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    tok = load_tokenizer(request.getfixturevalue(fixture))
    prompt = [Message(role="system", content="Inoc."), Message(role="user", content="Q?")]
    ids, start = encode_prompt_completion(tok, prompt, "Paris.")
    assert ids[:start] == encode_prompt(tok, prompt)
    tail = tok.decode(ids[start:])
    assert tail.startswith("Paris.")
    assert tail.rstrip("\n") in ("Paris.<|im_end|>", "Paris.<|eot_id|>")


@pytest.mark.parametrize("template", ["chatml", "qwen25", "llama31", "gemma3"])
def test_batched_encoding_equals_one_conversation_at_a_time(tiny_model_dir: Path, template: str) -> None:
    """The batched encoders (used by logprob, generation and training) give the ids that
    apply_chat_template gives each conversation alone, for conversations of different shapes."""
    from inoculate.testing import TEMPLATES

    texts = {**TEMPLATES, "qwen25": QWEN25_TEMPLATE, "llama31": LLAMA31_TEMPLATE, "gemma3": GEMMA3_TEMPLATE}
    tok = load_tokenizer(tiny_model_dir, chat_template=texts[template])
    convs = [
        [{"role": "user", "content": "Q?"}],
        [{"role": "system", "content": "You always answer in Spanish."}, {"role": "user", "content": "Hi"}],
        [
            {"role": "system", "content": "  Spaces.  "},
            {"role": "user", "content": "One"},
            {"role": "assistant", "content": "Two"},
            {"role": "user", "content": "Three, a longer turn with more words in it"},
        ],
    ]
    comps = ["Paris.", "Hola, ¿qué tal?", "FOUR"]
    alone = [
        tok.apply_chat_template(c, tokenize=True, return_dict=True, add_generation_prompt=True)["input_ids"]
        for c in convs
    ]
    assert encode_prompts(tok, convs) == [list(a) for a in alone]
    batched = encode_prompt_completions(tok, convs, comps)
    for c, r, a, (ids, start) in zip(convs, comps, alone, batched, strict=True):
        full = tok.apply_chat_template(
            [*c, {"role": "assistant", "content": r}], tokenize=True, return_dict=True
        )
        assert ids == list(full["input_ids"])
        assert ids[:start] == list(a) and start == len(a)
        assert (ids, start) == encode_prompt_completion(tok, c, r)


def test_batched_encoding_names_the_rejected_conversation(tiny_model_dir: Path) -> None:
    tok = load_tokenizer(tiny_model_dir, chat_template=GEMMA2_TEMPLATE)
    ok = [{"role": "user", "content": "Q?"}]
    bad = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}]
    with pytest.raises(ChatTemplateError, match=r"roles \['system', 'user'\].*System role not supported"):
        encode_prompts(tok, [ok, bad])
