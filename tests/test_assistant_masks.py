"""The loss on assistant tokens, with the shipped models' real chat templates and with a template
TRL does not know: hala's masks by rendering prefixes against TRL's `{% generation %}` masks."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from hala.assistant_masks import TemplateError, tokenize_with_assistant_mask

TEMPLATES = Path(__file__).parent / "fixtures" / "chat_templates"
TRL_TEMPLATES = resources.files("trl") / "chat_templates"
# Multi-turn, with a system turn: the system prompt and both user turns are context only.
CONVERSATION = [
    {"role": "system", "content": "Translate English to Arabic."},
    {"role": "user", "content": "Hello there."},
    {"role": "assistant", "content": "مرحبا بك."},
    {"role": "user", "content": "And the weather?"},
    {"role": "assistant", "content": "الجو حار جدًا اليوم."},
]
# A template of the kind a model may ship with its own turn markers, which TRL cannot patch.
OWN_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}<<SYS>> {{ m['content'] }} <</SYS>>\n"
    "{% elif m['role'] == 'user' %}[USER] {{ m['content'] }}\n"
    "{% else %}[BOT] {{ m['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}[BOT] {% endif %}"
)


@pytest.fixture()
def tokenizer(tiny):
    return AutoTokenizer.from_pretrained(tiny("student-s"))


def _assistant_text(tokenizer, encoded) -> str:
    return tokenizer.decode([t for t, m in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if m])


def test_the_fixtures_are_the_templates_trl_knows_the_models_by():
    # TRL recognises a model by its template's exact text; so do these copies.
    assert (TEMPLATES / "LFM2.jinja").read_text() == (TRL_TEMPLATES / "lfm2_v2.jinja").read_text()
    assert (TEMPLATES / "Qwen2.5-Instruct.jinja").read_text() == (TRL_TEMPLATES / "qwen2_5.jinja").read_text()


def test_masks_by_rendering_prefixes_equal_the_generation_markers_masks_on_lfm2(tokenizer):
    """LFM2's real template has no markers; TRL's training variant of it has them. Same tokens, same masks."""
    tokenizer.chat_template = (TEMPLATES / "LFM2.jinja").read_text()
    ours = tokenize_with_assistant_mask(tokenizer, CONVERSATION)
    tokenizer.chat_template = (TRL_TEMPLATES / "lfm2_v2_training.jinja").read_text()
    reference = tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert ours["input_ids"] == list(reference["input_ids"])
    assert ours["assistant_masks"] == list(reference["assistant_masks"])
    # Both answers and their end-of-turn markers; no system, user or generation-prompt token.
    assert _assistant_text(tokenizer, ours) == "مرحبا بك.<|im_end|>\nالجو حار جدًا اليوم.<|im_end|>\n"


def test_on_qwen2_5_the_masks_differ_only_by_the_generation_prompts_last_newline(tokenizer):
    """TRL's Qwen2.5 training variant opens its generation block before the newline that ends the
    generation prompt; hala leaves that newline to the prompt, as the model reads it at inference."""
    tokenizer.chat_template = (TEMPLATES / "Qwen2.5-Instruct.jinja").read_text()
    ours = tokenize_with_assistant_mask(tokenizer, CONVERSATION)
    tokenizer.chat_template = (TRL_TEMPLATES / "qwen2_5_training.jinja").read_text()
    reference = tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert ours["input_ids"] == list(reference["input_ids"])
    differ = [i for i, (a, b) in enumerate(zip(ours["assistant_masks"], reference["assistant_masks"], strict=True)) if a != b]
    # One newline per assistant turn, right after "<|im_start|>assistant".
    assert len(differ) == 2 and all(tokenizer.decode([ours["input_ids"][i]]) == "\n" for i in differ)
    assert all(tokenizer.decode(ours["input_ids"][:i]).endswith("<|im_start|>assistant") for i in differ)


def test_a_template_trl_cannot_patch_gets_its_assistant_tokens_by_rendering(tokenizer):
    from trl.chat_template_utils import get_training_chat_template

    tokenizer.chat_template = OWN_TEMPLATE
    with pytest.raises(ValueError):
        get_training_chat_template(tokenizer)  # what made hala refuse such a model before
    encoded = tokenize_with_assistant_mask(tokenizer, CONVERSATION)
    # The prompt ends "[BOT] " and the tokenizer joins that space to the first word: the token holds text
    # the model writes, so it is the assistant's.
    assert _assistant_text(tokenizer, encoded) == f" مرحبا بك.{tokenizer.eos_token}\n الجو حار جدًا اليوم.{tokenizer.eos_token}\n"


def test_a_template_that_rewrites_earlier_turns_is_refused_naming_the_turn(tokenizer):
    # Like templates that drop past reasoning: the last assistant turn is rendered differently.
    tokenizer.chat_template = OWN_TEMPLATE.replace("[BOT] {{ m['content'] }}", "[BOT] {{ m['content'] if loop.last else '...' }}")
    with pytest.raises(TemplateError, match=r"message 2, an assistant turn, changes how earlier messages are rendered"):
        tokenize_with_assistant_mask(tokenizer, CONVERSATION)
