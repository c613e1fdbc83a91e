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

# Things a translation must carry over unchanged: inline code, URLs, inline math ($x$, \(x\)),
# format placeholders ({name}, {0}, %s, %(name)s) and markup tags. A "$" opens math only when
# a non-space follows and closes it only after a non-space, so prices ("$5 and $10") are prose.
# Every repeat is bounded and stays on one line, so a hostile text costs linear time.
PROTECTED_INLINE = re.compile(
    r"`[^`\n]{1,500}`"
    r"|https?://\S{0,2000}[^\s.,;:!?)\]}'\"]"
    r"|\$(?=[^\s$])[^$\n]{0,500}?(?<=[^\s$])\$(?!\d)|\\\([^\n]{1,500}?\\\)"
    r"|\{\{?[A-Za-z0-9_]{0,100}\}\}?|%(?:\([A-Za-z_]{1,100}\))?[sdif]"
    r"|</?[A-Za-z][A-Za-z0-9-]{0,50}(?:\s[^<>\n]{0,300})?/?>"
)
_PROTECTED = re.compile(r"```.*?```|~~~.*?~~~|" + PROTECTED_INLINE.pattern, re.DOTALL)
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


def source_problem(text: str, settings: Filters, source_lang: str) -> str | None:
    """Why a text should not be translated at all (bidi controls, another language), or None."""
    if _BIDI_CONTROLS.search(text):
        return "bidi control characters in source"
    text_prose = prose(text)
    if len(text_prose) >= settings.langid_min_chars:
        found, prob = identify_language(text_prose)
        if found != source_lang and prob >= settings.langid_min_confidence:
            return f"source language is {found}, not {source_lang}"
    return None


_QUESTION_MARKS = ("?", "\u061f", "\uff1f")  # Latin, Arabic and full-width question marks


def answered_instead(source: str, translation: str) -> bool:
    """True when the source ends in a question and the translation asks none: a model that answers
    a question it was given to translate produces exactly this (length checks miss short answers)."""
    return prose(source).rstrip().endswith(_QUESTION_MARKS) and not any(q in translation for q in _QUESTION_MARKS)


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
    if answered_instead(src, tgt):
        return "answered instead of translated: the source asks a question, the target does not"
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
    """Exact duplicates by normalised text, near-duplicates by MinHash (datasketch) with LSH banding.

    datasketch's MinHashLSH index keeps, for every key, its band hashes and a bucket set per
    band, about 2 KB per pair: 2 GB at a million pairs. Deduplication only asks "has any
    earlier pair shared a band?", so one set of band fingerprints (a few ints per pair) does
    the same job in a tenth of the memory. The band layout is datasketch's own optimum for
    the threshold.
    """

    def __init__(self, settings: Filters):
        from datasketch import MinHash
        from datasketch.lsh import _optimal_param

        self.settings = settings
        self.seen: set[int] = set()
        self.bands: set[int] = set()
        perms = settings.minhash_permutations
        self.band_count, self.rows_per_band = _optimal_param(settings.near_duplicate_threshold, perms, 0.5, 0.5)
        # Computing the permutations is most of MinHash's set-up cost; they are the same for every pair.
        template = MinHash(num_perm=perms, seed=1)
        self.permutations, self.scheme = template.permutations, template.scheme

    def _minhash(self, text: str):
        from datasketch import MinHash

        words = _WORD.findall(text)
        shingles = {" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))}
        mh = MinHash(
            num_perm=self.settings.minhash_permutations, seed=1, permutations=self.permutations, scheme=self.scheme
        )
        mh.update_batch([s.encode() for s in shingles])
        return mh

    def check(self, pair: Pair) -> str | None:
        key = hash((normalise(pair.source), normalise(pair.target)))
        if key in self.seen:
            return "exact duplicate"
        self.seen.add(key)
        if not self.settings.near_duplicates:
            return None
        values = self._minhash(normalise(pair.source) + " ||| " + normalise(pair.target)).hashvalues
        r = self.rows_per_band
        fingerprints = [hash((b, values[b * r : (b + 1) * r].tobytes())) for b in range(self.band_count)]
        if any(f in self.bands for f in fingerprints):
            return "near duplicate"
        self.bands.update(fingerprints)
        return None


class PairFilter:
    """The heuristic checks and the duplicate check, in that order, for a stream of pairs."""

    def __init__(self, settings: Filters, source_lang: str, target_lang: str):
        self.settings, self.source_lang, self.target_lang = settings, source_lang, target_lang
        self.dedup = Deduplicator(settings)

    def __call__(self, pair: Pair) -> str | None:
        """The reason to reject ``pair``, or None; a kept pair is remembered for the duplicate check."""
        return check_pair(pair, self.settings, self.source_lang, self.target_lang) or self.dedup.check(pair)


def filter_pairs(
    pairs: Iterable[Pair], settings: Filters, source_lang: str, target_lang: str
) -> Iterator[tuple[Pair, str | None]]:
    """Each pair with its reject reason (None: kept), in input order, streamed."""
    check = PairFilter(settings, source_lang, target_lang)
    for pair in pairs:
        yield pair, check(pair)


def reason_key(reason: str) -> str:
    """A metric-name-safe family of a reason ("length ratio 3.10 outside ..." -> "length_ratio")."""
    family = re.split(r"[:0-9]", re.sub(r"\(.*?\)", "", reason), maxsplit=1)[0].strip()
    family = re.sub(r"\b(is|outside|not)\b.*$", "", family).strip()
    return re.sub(r"[^a-z]+", "_", family.lower()).strip("_")
