"""Heuristic quality filters for parallel pairs: each rejected pair gets one reason.

They run before the LLM judge (cheap checks first, so the judge only sees plausible pairs)
and on their own in ``hala filter`` without a judge. Language identification is py3langid's;
near-duplicates are found with MinHash LSH from datasketch.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hala.recipe import Filters

# Things a translation must carry over unchanged: fenced and inline code, URLs, format
# placeholders ({name}, {0}, %s, %d) and markup tags.
_PROTECTED = re.compile(
    r"```.*?```|`[^`\n]+`|https?://\S*[^\s.,;:!?)\]}'\"]|\{[A-Za-z0-9_]*\}|%[sd]|</?[A-Za-z][A-Za-z0-9]*>", re.DOTALL
)
_ARABIC_LETTER = re.compile(r"[\u0600-\u06FF\u0750-\u077F\u08A0-\u08FF]")
_LATIN_LETTER = re.compile(r"[A-Za-z]")
_WORD = re.compile(r"\w+")
# Embedding and override controls (LRE..RLO, LRI..PDI) reorder text invisibly; the marks
# LRM/RLM/ALM are ordinary in Arabic text and are left alone.
_BIDI_CONTROLS = re.compile(r"[\u202A-\u202E\u2066-\u2069]")


@dataclass(frozen=True)
class Pair:
    source: str
    target: str


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def protected_spans(text: str) -> list[str]:
    return _PROTECTED.findall(text)


def prose(text: str) -> str:
    """``text`` without its protected spans, white space collapsed."""
    return " ".join(_PROTECTED.sub(" ", text).split())


@functools.cache
def _identifier():
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    # Normalised probabilities let a weak guess on a short sentence be ignored instead of rejected.
    return LanguageIdentifier.from_modelpath(Path(MODEL_DIR) / MODEL_FILE, norm_probs=True)


def identify_language(text: str) -> tuple[str, float]:
    """py3langid's best guess for ``text`` and its probability."""
    lang, prob = _identifier().classify(text)
    return lang, float(prob)


def check_pair(pair: Pair, settings: Filters, source_lang: str, target_lang: str) -> str | None:
    """The reason to reject ``pair``, or None to keep it. Checks run cheapest first."""
    src, tgt = pair.source.strip(), pair.target.strip()
    if not src:
        return "empty source"
    if not tgt:
        return "empty target"
    longest = max(len(src), len(tgt))
    if longest > settings.max_chars:
        return f"too long: {longest} chars > {settings.max_chars}"
    if _BIDI_CONTROLS.search(src) or _BIDI_CONTROLS.search(tgt):
        return "bidi control characters"
    if normalise(src) == normalise(tgt):
        return "untranslated copy"
    if target_lang == "ar" and not _ARABIC_LETTER.search(tgt):
        return "no Arabic letters in target"
    # Code, URLs and placeholders are Latin by nature; scripts and languages are judged on the prose.
    src_prose, tgt_prose = prose(src), prose(tgt)
    if target_lang == "ar" and len(_LATIN_LETTER.findall(tgt_prose)) > 0.5 * len(_ARABIC_LETTER.findall(tgt_prose)):
        return "mixed scripts: target mostly Latin"
    ratio = len(tgt) / len(src)
    if not settings.min_length_ratio <= ratio <= settings.max_length_ratio:
        return f"length ratio {ratio:.2f} outside [{settings.min_length_ratio}, {settings.max_length_ratio}]"
    missing = [s for s in protected_spans(src) if s not in tgt]
    if missing:
        return f"lost code or placeholder: {missing[0][:40]}"
    if len(src_prose) >= settings.langid_min_chars:
        found, prob = identify_language(src_prose)
        if found != source_lang and prob >= settings.langid_min_confidence:
            return f"source language is {found}, not {source_lang}"
    if len(tgt_prose) >= settings.langid_min_chars:
        found, prob = identify_language(tgt_prose)
        if found != target_lang and found not in settings.target_lang_aliases and prob >= settings.langid_min_confidence:
            return f"target language is {found}, not {target_lang}"
    return None


class Deduplicator:
    """Exact duplicates by normalised text, near-duplicates by MinHash LSH over word shingles."""

    def __init__(self, settings: Filters):
        from datasketch import MinHashLSH

        self.settings = settings
        self.seen: set[int] = set()
        self.lsh = MinHashLSH(threshold=settings.near_duplicate_threshold, num_perm=settings.minhash_permutations)
        self.count = 0

    def _minhash(self, text: str):
        from datasketch import MinHash

        words = _WORD.findall(text)
        shingles = {" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))}
        mh = MinHash(num_perm=self.settings.minhash_permutations, seed=1)
        mh.update_batch([s.encode() for s in shingles])
        return mh

    def check(self, pair: Pair) -> str | None:
        key = hash((normalise(pair.source), normalise(pair.target)))
        if key in self.seen:
            return "exact duplicate"
        self.seen.add(key)
        if not self.settings.near_duplicates:
            return None
        mh = self._minhash(normalise(pair.source) + " ||| " + normalise(pair.target))
        if self.lsh.query(mh):
            return "near duplicate"
        self.lsh.insert(str(self.count), mh)
        self.count += 1
        return None


def filter_pairs(
    pairs: Iterable[Pair], settings: Filters, source_lang: str, target_lang: str
) -> Iterator[tuple[Pair, str | None]]:
    """Each pair with its reject reason (None: kept), in input order, streamed."""
    dedup = Deduplicator(settings)
    for pair in pairs:
        reason = check_pair(pair, settings, source_lang, target_lang)
        if reason is None:
            reason = dedup.check(pair)
        yield pair, reason


def reason_key(reason: str) -> str:
    """A metric-name-safe family of a reason ("length ratio 3.10 outside ..." -> "length_ratio")."""
    family = re.split(r"[:0-9]", reason, maxsplit=1)[0].strip()
    family = re.sub(r"\b(is|outside|not)\b.*$", "", family).strip()
    return re.sub(r"[^a-z]+", "_", family.lower()).strip("_")
