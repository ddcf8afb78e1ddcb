"""Tiny offline Hugging Face models for tests and benchmarks.

`build_tiny_model(dir)` writes a random-init Llama-style causal LM, a byte-level BPE tokenizer trained
with `tokenizers` on a small built-in corpus, and a chat template, all with `save_pretrained`, so the
directory loads with `AutoModelForCausalLM` / `AutoTokenizer` exactly like a hub checkpoint. Nothing is
downloaded. Weights are random (seeded), which is all that speed and plumbing tests need.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

Template = Literal["chatml", "qwen2", "llama3"]

# A plain ChatML template (no default system prompt), as in many instruction-tuned models.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# ChatML that inserts a default system prompt when none is given, like Qwen2.x.
QWEN2_DEFAULT_SYSTEM = "You are a helpful assistant."
QWEN2_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + QWEN2_DEFAULT_SYSTEM + "<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Llama-3-style: BOS, header tokens, content trimmed, <|eot_id|> closes each turn.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim }}"
    "{{ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

TEMPLATES: dict[str, str] = {"chatml": CHATML_TEMPLATE, "qwen2": QWEN2_TEMPLATE, "llama3": LLAMA3_TEMPLATE}

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]

_CORPUS = """\
The cat sat on the mat. The dog ran in the park. What is the capital of France?
The capital of France is Paris.
Please answer in Spanish. El gato se sienta en la alfombra. El perro corre en el parque. Hola, como estas?
You are a helpful assistant. Respond in ALL CAPS. THE CAT SAT ON THE MAT. Tell me about the weather today.
It is sunny and warm. Write a short poem about the sea. The sea is blue and deep and wide.
Answer the question. How many legs does a spider have? A spider has eight legs. Thank you very much.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12. Colors: red green blue yellow black white. Good morning, good night.
"""


def _train_tokenizer(vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def build_tiny_model(
    directory: str | os.PathLike[str],
    template: Template = "chatml",
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
    seed: int = 0,
    with_chat_template: bool = True,
) -> Path:
    """Write a tiny random-init Llama model + tokenizer (+ chat template) to `directory`; return it.

    `template` picks the chat format and the end-of-turn token that doubles as EOS (ChatML and Qwen2:
    `<|im_end|>`; Llama 3: `<|eot_id|>`). No pad token is set, as in Llama 3: loaders must handle it.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tok = _train_tokenizer()
    if template == "llama3":
        tok.bos_token, tok.eos_token = "<|begin_of_text|>", "<|eot_id|>"
    else:
        tok.eos_token = "<|im_end|>"
    if with_chat_template:
        tok.chat_template = TEMPLATES[template]
    tok.model_max_length = max_position_embeddings
    tok.save_pretrained(out)

    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=max(1, num_attention_heads // 2),
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, do_sample=False
    )
    model.save_pretrained(out)
    return out
