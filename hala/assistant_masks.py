"""Which tokens of a rendered conversation are the assistant's, for any chat template.

TRL limits the loss to assistant tokens through ``{% generation %}`` markers in the template,
and patches in markers only for templates it recognises byte for byte. A model with its own
template (Fanar, a fine-tune with an edited one) has neither. What every template does have is
its own rendering of a conversation's prefixes: the text up to an assistant turn with the
generation prompt is what the model reads, and the text that the full turn adds after it is what
the model writes. So the mask comes from rendering, not from the template's source.

This needs a prefix-preserving template: rendering a conversation's first turns must give the
start of the rendering of the whole. A template that rewrites earlier turns (some drop past
reasoning) is refused with the turn where it happens.
"""

from __future__ import annotations

from collections.abc import Sequence


class TemplateError(ValueError):
    """The chat template cannot tell the assistant's tokens apart; the message says where."""


def _render(tokenizer, messages: Sequence[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)


def assistant_spans(tokenizer, messages: Sequence[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans the assistant writes in it, turn by turn."""
    text = _render(tokenizer, messages, False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], True)
        turn = _render(tokenizer, messages[: i + 1], False)
        if not turn.startswith(prompt) or not text.startswith(turn):
            raise TemplateError(
                f"the chat template does not render conversations prefix by prefix (message {i}, an assistant turn, "
                "changes how earlier messages are rendered), so its assistant tokens cannot be found"
            )
        if len(turn) > len(prompt):
            spans.append((len(prompt), len(turn)))
    return text, spans


def tokenize_with_assistant_mask(tokenizer, messages: Sequence[dict]) -> dict[str, list[int]]:
    """``input_ids`` of the rendered conversation and ``assistant_masks`` (1 where the assistant writes).

    A token belongs to the assistant when it overlaps an assistant span: the turn's text and the
    end-of-turn marker the template writes after it, nothing of the generation prompt before it.
    (A token that straddles the span's start, where a tokenizer merges the prompt's last character
    with the answer's first, is the assistant's: it holds text the model must learn to write.)
    """
    text, spans = assistant_spans(tokenizer, messages)
    # The template writes its special tokens (BOS, turn markers) itself.
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(start < stop and end > begin for begin, stop in spans)) for start, end in encoded["offset_mapping"]]
    return {"input_ids": list(encoded["input_ids"]), "assistant_masks": mask}
