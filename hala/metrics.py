"""Translation quality: sacrebleu's chrF++ and BLEU, the scores the Hala report uses."""

from __future__ import annotations

from collections.abc import Sequence

import sacrebleu


def translation_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus-level chrF, chrF++ (word_order=2) and BLEU; refuses mismatched or empty inputs."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not references:
        raise ValueError("no references to score against")
    hyps, refs = list(hypotheses), [list(references)]
    return {
        "chrf": sacrebleu.corpus_chrf(hyps, refs).score,
        "chrf_pp": sacrebleu.corpus_chrf(hyps, refs, word_order=2).score,
        # The default 13a tokeniser splits Arabic punctuation poorly; 'intl' handles Unicode punctuation.
        "bleu": sacrebleu.corpus_bleu(hyps, refs, tokenize="intl").score,
    }
