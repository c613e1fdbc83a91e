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

import bisect
import functools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from hala.engines import Completion, GenerationEngine
from hala.filters import PROTECTED_INLINE
from hala.recipe import Generation

MARKER = "⟦{}⟧"
_MARKER_TEXT = re.compile(r"⟦(\d+)⟧")
# Bump when planning or assembling changes what a translation looks like: shards made under
# other rules are then redone (this string is part of every translation shard's key).
RULES_VERSION = "1"
_FENCE_OPEN = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})")
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


_WINDOW = 2000  # pysbd's time grows faster than the text: long texts go to it in windows
_LIKELY_END = re.compile(r"(?<=[.!?;:])\s+")
_SPACE = re.compile(r"\s")


def _windows(text: str) -> Iterator[str]:
    """``text`` in consecutive pieces of about _WINDOW characters, cut after a likely sentence end."""
    start = 0
    while len(text) - start > _WINDOW:
        cut = None
        for match in _LIKELY_END.finditer(text, start + _WINDOW // 4, start + _WINDOW):
            cut = match.end()
        if cut is None:  # no sentence end: cut after white space, never inside a word or a ⟦n⟧ marker
            space = max(text.rfind(" ", start + 1, start + _WINDOW), text.rfind("\t", start + 1, start + _WINDOW))
            if space <= start:  # one enormous word: cut at the first white space after it
                following = _SPACE.search(text, start + _WINDOW)
                space = following.start() if following else len(text) - 1
            cut = space + 1
        yield text[start:cut]
        start = cut
    yield text[start:]


def _sentences(text: str, language: str) -> list[str]:
    out: list[str] = []
    for window in _windows(text):
        segments = _segmenter(language).segment(window)
        # pysbd has known cases where its segments do not add up to the text (a space moved or
        # a character dropped); a faithful plan then keeps the window whole and cuts at words.
        out += segments if "".join(segments) == window else [window]
    return out


def _chunks(text: str, budget: Budget) -> list[str]:
    """``text`` cut into pieces of at most ``budget.tokens`` tokens, at sentence, else word, boundaries.

    The pieces join back into exactly ``text``. A piece's size is the sum of its units' token
    counts (tokenizers merge little across a space), which keeps this linear in the text.
    """
    count_tokens, limit = budget.count, budget.tokens
    if count_tokens(text) <= limit:
        return [text]
    chunks, current, used = [], "", 0

    def add(unit: str, size: int) -> None:
        nonlocal current, used
        if current and used + size > limit:
            chunks.append(current)
            current, used = "", 0
        current += unit
        used += size

    for sentence in _sentences(text, budget.language):
        size = count_tokens(sentence)
        if size <= limit:
            add(sentence, size)
            continue
        # A sentence over the budget starts a chunk of its own and is cut at words.
        if current:
            chunks.append(current)
            current, used = "", 0
        for word in re.findall(r"\s*\S+\s*", sentence):
            add(word, count_tokens(word))
        chunks.append(current)
        current, used = "", 0
    if current or not chunks:
        chunks.append(current)
    return chunks


def _plan_line(line: str, budget: Budget) -> list[Piece]:
    if not line.strip() or _TABLE_RULE.match(line):
        return [Piece(copy=line)]
    prefix = _PREFIX.match(line).group(1)
    rest = line[len(prefix) :]
    if rest.startswith("|") and rest.rstrip().endswith("|"):  # a table row: cells are translated one by one
        # Split on the pipes of the table, not on those inside inline code (`a|b`): mask first.
        masked, spans = _mask(rest)
        pieces: list[Piece] = [Piece(copy=prefix)]
        for i, cell in enumerate(re.split(r"(\|)", masked)):
            cell = _MARKER_TEXT.sub(lambda m: spans[int(m.group(1)) - 1], cell)
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
    for chunk in _chunks(masked, budget):
        # The white space around a chunk is copied, so the chunks rejoin exactly as they were.
        before, after = chunk[: len(chunk) - len(chunk.lstrip())], chunk[len(chunk.rstrip()) :]
        numbers = [int(n) for n in _MARKER_TEXT.findall(chunk)]
        # Each chunk carries its own markers, renumbered from 1, so a model sees a short, local set.
        local = chunk.strip()
        for j, n in enumerate(numbers, 1):
            local = local.replace(MARKER.format(n), MARKER.format(f"#{j}"), 1)
        local = local.replace("⟦#", "⟦")
        pieces += [Piece(copy=before), Piece(body=local, spans=[spans[n - 1] for n in numbers]), Piece(copy=after)]
    pieces.append(Piece(copy=trail))
    return pieces


def _blocks(text: str) -> Iterator[tuple[bool, str]]:
    """The text as (copied?, lines) runs: fenced code and ``$$`` math blocks are copied.

    One pass over the lines. As in CommonMark, a fence is closed by a line of the same
    character at least as long, and a fence never closed runs to the end of the text.
    """
    lines = text.splitlines(keepends=True)
    math_lines = [i for i, line in enumerate(lines) if line.lstrip(" \t").startswith("$$")]
    i = 0
    while i < len(lines):
        line = lines[i]
        opening = _FENCE_OPEN.match(line)
        if opening:
            char, size = opening.group(1)[0], len(opening.group(1))
            closing = re.compile(rf"^[ \t]{{0,3}}{re.escape(char)}{{{size},}}[ \t]*\r?\n?$")
            end = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j])), len(lines) - 1)
            yield True, "".join(lines[i : end + 1])
            i = end + 1
            continue
        if line.lstrip(" \t").startswith("$$"):
            if line.count("$$") >= 2:  # $$ ... $$ on one line
                yield True, line
                i += 1
                continue
            later = bisect.bisect_right(math_lines, i)
            if later < len(math_lines):
                end = math_lines[later]
                yield True, "".join(lines[i : end + 1])
                i = end + 1
                continue
        yield False, line
        i += 1


def plan_text(text: str, budget: Budget) -> Plan:
    """How ``text`` will be translated: what is copied, what goes to the model, in order."""
    if "⟦" in text or "⟧" in text:
        raise UnfaithfulTranslation("source uses the reserved marker characters ⟦ ⟧")
    pieces: list[Piece] = []
    for copied, chunk in _blocks(text):
        if copied:
            pieces.append(Piece(copy=chunk))
            continue
        ending = chunk[len(chunk.rstrip("\r\n")) :]
        pieces += [*_plan_line(chunk.rstrip("\r\n"), budget), Piece(copy=ending)]
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
