"""Promotion in the MLflow registry: a challenger becomes champion only when it earned it.

New versions arrive with the alias ``challenger`` and their evaluation as metrics of their
MLflow Model (``<benchmark>``, ``average``, ``base_average``; :mod:`hala.registry`). A
promotion compares the challenger with the current champion and with its own base model on
the evaluation average, checks every per-benchmark floor of the recipe, and either moves
``champion`` or refuses with the numbers. Every decision and its reason are written on the
version as tags; the version that lost ``champion`` is remembered, so a rollback can give it
back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hala.recipe import Promotion
from hala.registry import model_metrics
from hala.tracking import registry_client

CHAMPION, CHALLENGER = "champion", "challenger"
PREVIOUS = "hala.previous_champion"


class PromotionRefused(RuntimeError):
    """The challenger did not earn the promotion; the message gives the numbers."""


@dataclass(frozen=True)
class Decision:
    model: str
    version: str
    promoted: bool
    reason: str
    previous_champion: str | None




def _alias_version(client, model: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model, alias)
    except MlflowException:
        return None


def _record(client, model: str, version: str, decision: str, reason: str) -> None:
    client.set_model_version_tag(model, version, "hala.promotion.decision", decision)
    client.set_model_version_tag(model, version, "hala.promotion.reason", reason)
    client.set_model_version_tag(model, version, "hala.promotion.time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def judge_promotion(candidate: dict[str, float], champion: dict[str, float] | None, policy: Promotion) -> list[str]:
    """Every reason the candidate may not become champion (empty: it may), each with its numbers."""
    problems = []
    average = candidate.get("average")
    if average is None:
        return ["no evaluation average (model metric average) on this version"]
    base = candidate.get("base_average")
    if base is None:
        problems.append("no base-model average (model metric base_average) to compare with")
    elif average < base + policy.margin:
        problems.append(f"average {average:.4f} does not beat its base {base:.4f} by the margin {policy.margin}")
    if champion is not None:
        if "average" not in champion:
            problems.append("the current champion has no evaluation average to compare with")
        elif average < champion["average"] + policy.margin:
            problems.append(
                f"average {average:.4f} does not beat the champion's {champion['average']:.4f} by the margin {policy.margin}"
            )
    for benchmark, floor in sorted(policy.floors.items()):
        score = candidate.get(benchmark)
        if score is None:
            problems.append(f"no score for {benchmark}, which has a floor of {floor}")
        elif score < floor:
            problems.append(f"{benchmark} {score:.4f} is under its floor {floor}")
    return problems


def promote(tracking_uri: str, model: str, policy: Promotion, version: str | None = None) -> Decision:
    """Make ``version`` (default: the ``challenger``) the champion of ``model``, or refuse with the reasons."""
    client = registry_client(tracking_uri)
    candidate = client.get_model_version(model, version) if version else _alias_version(client, model, CHALLENGER)
    if candidate is None:
        raise PromotionRefused(f"{model} has no version with the alias {CHALLENGER!r}; name one with --version")
    champion = _alias_version(client, model, CHAMPION)
    if champion is not None and str(champion.version) == str(candidate.version):
        raise PromotionRefused(f"{model} version {candidate.version} is already the champion")
    scores = model_metrics(client, candidate)
    held = model_metrics(client, champion) if champion else None
    problems = judge_promotion(scores, held, policy)
    if problems:
        reason = "; ".join(problems)
        _record(client, model, candidate.version, "refused", reason)
        raise PromotionRefused(f"{model} version {candidate.version} not promoted: {reason}")
    against = f"champion version {champion.version} ({held['average']:.4f})" if champion else "no champion yet"
    reason = f"average {scores['average']:.4f} vs base {scores['base_average']:.4f}, {against}; margin {policy.margin}"
    if policy.floors:
        reason += f"; floors met: {', '.join(sorted(policy.floors))}"
    if champion is not None:
        client.set_model_version_tag(model, candidate.version, PREVIOUS, str(champion.version))
    client.set_registered_model_alias(model, CHAMPION, candidate.version)
    _record(client, model, candidate.version, "promoted", reason)
    return Decision(model, str(candidate.version), True, reason, str(champion.version) if champion else None)


def rollback(tracking_uri: str, model: str) -> Decision:
    """Give ``champion`` back to the version it was taken from at the last promotion."""
    client = registry_client(tracking_uri)
    champion = _alias_version(client, model, CHAMPION)
    if champion is None:
        raise PromotionRefused(f"{model} has no champion to roll back")
    previous = champion.tags.get(PREVIOUS)
    if not previous:
        raise PromotionRefused(f"{model} version {champion.version} was the first champion; there is none before it")
    client.set_registered_model_alias(model, CHAMPION, previous)
    reason = f"rolled back: champion returned from version {champion.version} to version {previous}"
    _record(client, model, champion.version, "rolled back", reason)
    return Decision(model, previous, True, reason, str(champion.version))
