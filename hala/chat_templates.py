"""Chat templates: the format a model's conversations are rendered in, for training and generation.

A student whose tokenizer ships without a template (a base model, not an instruct one) gets one
from the recipe: either a named template below or Jinja text. Training needs ``{% generation %}``
markers in it, so the loss can be limited to the assistant's tokens.
"""

from __future__ import annotations

# ChatML, as LFM2 (and many others) use.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

NAMED = {"chatml": CHATML}


def check_chat_template(value: str) -> str:
    """Validate a recipe's ``chat_template``: a known name or Jinja text."""
    if value in NAMED or "{{" in value or "{%" in value:
        return value
    raise ValueError(f"chat_template {value[:40]!r} is neither a known name ({', '.join(NAMED)}) nor Jinja text")


def resolve_chat_template(value: str | None) -> str | None:
    """The Jinja text for a recipe's ``chat_template`` (None stays None: use the tokenizer's own)."""
    if value is None:
        return None
    return NAMED.get(value, check_chat_template(value))


def apply_chat_template(tokenizer, value: str | None, model: str) -> None:
    """Give ``tokenizer`` the recipe's template, or refuse a tokenizer that has none at all.

    A template from the recipe wins over the tokenizer's own: the recipe is the explicit choice.
    """
    template = resolve_chat_template(value)
    if template is not None:
        tokenizer.chat_template = template
    elif not tokenizer.chat_template:
        raise ValueError(
            f"model {model} has no chat template; set chat_template in its recipe section "
            f"(a name: {', '.join(NAMED)}, or Jinja text)"
        )
