"""Faithful translation of texts and conversations with a chat model.

A text is planned before the model sees it:
- fenced code blocks, display math and markdown table rules are copied, never translated;
- each remaining line keeps its markdown prefix (heading, list, quote marks, indentation)
  and only its body is translated;
- inline spans that must survive unchanged (inline code, URLs, inline math, placeholders such
  as ``{name}`` or ``%s``, markup tags) are swapped for numbered markers (``⟦1⟧``) and put
  back after translation; a translation that loses a marker is rejected, not repaired;
- a body longer than the token budget is cut at sentence boundaries (pysbd), or at word
  boundaries for a single over-long sentence, and the pieces are rejoined in order.

Every piece of every text in a batch goes to the engine in one call, so the backend can
batch them (length-sorted on transformers, continuous batching on vLLM).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hala.engines import Completion, GenerationEngine
from hala.filters import PROTECTED_INLINE
from hala.recipe import Generation

MARKER = "⟦{}⟧"
_MARKER_TEXT = re.compile(r"⟦(\d+)⟧")
_FENCE = re.compile(r"^([ \t]*)(`{3,}|~{3,}).*?^\1\2[ \t]*$\n?|^[ \t]*\$\$.*?\$\$[ \t]*$\n?", re.MULTILINE | re.DOTALL)
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_PREFIX = re.compile(r"^(\s*(?:#{1,6}\s+|>\s?|[-*+]\s+(?:\[[ xX]\]\s+)?|\d{1,3}[.)]\s+)*)")
_LETTER = re.compile(r"[^\W\d_]")


class UnfaithfulTranslation(ValueError):
    """A translation that broke an invariant (a protected span lost, output cut); the message is the reason."""


@dataclass
class Piece:
    """A run of a text: copied as is, or translated (``body`` with markers for its protected spans)."""

    copy: str = ""
    body: str = ""
    spans: list[str] = field(default_factory=list)


@dataclass
class Plan:
    pieces: list[Piece]

    @property
    def requests(self) -> list[str]:
        return [p.body for p in self.pieces if p.body]


def _mask(text: str) -> tuple[str, list[str]]:
    spans: list[str] = []

    def swap(match: re.Match) -> str:
        spans.append(match.group(0))
        return MARKER.format(len(spans))

    return PROTECTED_INLINE.sub(swap, text), spans


@dataclass(frozen=True)
class Budget:
    """The most tokens one request may carry, how to count them, and the source language (for sentences)."""

    tokens: int
    count: Callable[[str], int]
    language: str = "en"


@functools.cache
def _segmenter(language: str):
    import pysbd
    from pysbd.languages import LANGUAGE_CODES

    # clean=False keeps every character, so the segments join back into the exact text.
    return pysbd.Segmenter(language=language if language in LANGUAGE_CODES else "en", clean=False)


def _chunks(text: str, budget: Budget) -> list[str]:
    """``text`` cut into pieces of at most ``budget.tokens`` tokens, at sentence, else word, boundaries."""
    count_tokens, limit = budget.count, budget.tokens
    if count_tokens(text) <= limit:
        return [text]
    units: list[str] = []
    for sentence in _segmenter(budget.language).segment(text):
        if count_tokens(sentence) <= limit:
            units.append(sentence)
            continue
        words, piece = re.findall(r"\S+\s*", sentence), ""
        for word in words:
            if piece and count_tokens(piece + word) > limit:
                units.append(piece)
                piece = ""
            piece += word
        units.append(piece)
    chunks, current = [], ""
    for unit in units:
        if current and count_tokens(current + unit) > limit:
            chunks.append(current)
            current = ""
        current += unit
    chunks.append(current)
    return chunks


def _plan_line(line: str, budget: Budget) -> list[Piece]:
    if not line.strip() or _TABLE_RULE.match(line):
        return [Piece(copy=line)]
    prefix = _PREFIX.match(line).group(1)
    rest = line[len(prefix) :]
    if rest.startswith("|") and rest.rstrip().endswith("|"):  # a table row: cells are translated one by one
        pieces: list[Piece] = [Piece(copy=prefix)]
        for i, cell in enumerate(re.split(r"(\|)", rest)):
            pieces += [Piece(copy=cell)] if i % 2 or not cell.strip() else _plan_body(cell, budget)
        return pieces
    return [Piece(copy=prefix), *_plan_body(rest, budget)]


def _plan_body(text: str, budget: Budget) -> list[Piece]:
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()) :]
    core = text.strip()
    masked, spans = _mask(core)
    if not _LETTER.search(_MARKER_TEXT.sub("", masked)):  # nothing but code, numbers or punctuation: copy
        return [Piece(copy=text)]
    pieces = [Piece(copy=lead)]
    for i, chunk in enumerate(_chunks(masked, budget)):
        if i:
            pieces.append(Piece(copy=" "))
        numbers = [int(n) for n in _MARKER_TEXT.findall(chunk)]
        # Each chunk carries its own markers, renumbered from 1, so a model sees a short, local set.
        local = chunk
        for j, n in enumerate(numbers, 1):
            local = local.replace(MARKER.format(n), MARKER.format(f"#{j}"), 1)
        local = local.replace("⟦#", "⟦")
        pieces.append(Piece(body=local.strip(), spans=[spans[n - 1] for n in numbers]))
    pieces.append(Piece(copy=trail))
    return pieces


def plan_text(text: str, budget: Budget) -> Plan:
    """How ``text`` will be translated: what is copied, what goes to the model, in order."""
    if "⟦" in text or "⟧" in text:
        raise UnfaithfulTranslation("source uses the reserved marker characters ⟦ ⟧")
    pieces: list[Piece] = []
    position = 0
    for block in _FENCE.finditer(text):
        for line in text[position : block.start()].splitlines(keepends=True):
            ending = line[len(line.rstrip("\r\n")) :]
            pieces += [*_plan_line(line.rstrip("\r\n"), budget), Piece(copy=ending)]
        pieces.append(Piece(copy=block.group(0)))
        position = block.end()
    for line in text[position:].splitlines(keepends=True):
        ending = line[len(line.rstrip("\r\n")) :]
        pieces += [*_plan_line(line.rstrip("\r\n"), budget), Piece(copy=ending)]
    return Plan([p for p in pieces if p.copy or p.body])


def _unmask(answer: str, spans: list[str]) -> str:
    found = [int(n) for n in _MARKER_TEXT.findall(answer)]
    expected = list(range(1, len(spans) + 1))
    if sorted(found) != expected:
        lost = [spans[n - 1] for n in expected if n not in found]
        if lost:
            raise UnfaithfulTranslation(f"lost protected span: {lost[0][:60]}")
        raise UnfaithfulTranslation("protected span repeated or invented in the translation")
    return _MARKER_TEXT.sub(lambda m: spans[int(m.group(1)) - 1], answer)


def assemble(plan: Plan, completions: Sequence[Completion]) -> str:
    """The translated text of ``plan`` from the completions of its requests, in order."""
    answers = iter(completions)
    out = []
    for piece in plan.pieces:
        if not piece.body:
            out.append(piece.copy)
            continue
        completion = next(answers)
        if completion.truncated:
            raise UnfaithfulTranslation("translation cut at max_new_tokens")
        if not completion.text.strip():
            raise UnfaithfulTranslation("empty translation")
        out.append(_unmask(completion.text.strip(), piece.spans))
    return "".join(out)


def translation_conversations(texts: Sequence[str], prompt: str) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": prompt.format(text=t)}] for t in texts]


def translate_texts(
    engine: GenerationEngine, texts: Sequence[str], prompt: str, generation: Generation, desc: str = "translating"
) -> list[str]:
    """Plain one-prompt-per-text translation, for short curated texts (gate and evaluation sets)."""
    return engine.chat(translation_conversations(texts, prompt), generation, desc=desc)
