"""Translating texts with a chat model: one prompt per text, order kept."""

from __future__ import annotations

from collections.abc import Sequence

from hala.engines import GenerationEngine
from hala.recipe import Generation


def translation_conversations(texts: Sequence[str], prompt: str) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": prompt.format(text=t)}] for t in texts]


def translate_texts(
    engine: GenerationEngine, texts: Sequence[str], prompt: str, generation: Generation, desc: str = "translating"
) -> list[str]:
    return engine.chat(translation_conversations(texts, prompt), generation, desc=desc)
