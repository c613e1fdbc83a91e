"""Champion/challenger promotion and rollback against a real local MLflow registry."""

import subprocess
import sys

import mlflow
import pytest

from hala.promotion import PromotionRefused, judge_promotion, promote, rollback
from hala.recipe import Promotion
from hala.tracking import local_tracking_uri
from tests.registry_helpers import register_tiny

MODEL = "hala-test-student"


@pytest.fixture
def store(tmp_path, tiny):
    """A local registry, and the checkpoint every version is logged from."""
    return local_tracking_uri(tmp_path), tiny("student-s")


def _register(store, average, base, **scores):
    # The scores on the version's model, where the pipeline logs them and promotion reads them.
    uri, checkpoint = store
    return register_tiny(uri, MODEL, checkpoint, {"average": average, "base_average": base, **scores})


def _alias(uri, alias):
    return mlflow.MlflowClient(uri, uri).get_model_version_by_alias(MODEL, alias)


def test_first_challenger_that_beats_its_base_becomes_champion_then_a_worse_one_is_refused(store):
    uri = store[0]
    v1 = _register(store, 0.52, 0.50, aratrust=0.7)
    decision = promote(uri, MODEL, Promotion(margin=0.01))
    assert decision.version == v1 and decision.previous_champion is None
    assert str(_alias(uri, "champion").version) == v1
    assert _alias(uri, "champion").tags["hala.promotion.decision"] == "promoted"

    v2 = _register(store, 0.525, 0.50, aratrust=0.7)  # better than its base, not better than v1 by the margin
    with pytest.raises(PromotionRefused, match=r"average 0.5250 does not beat the champion's 0.5200 by the margin 0.01"):
        promote(uri, MODEL, Promotion(margin=0.01))
    assert str(_alias(uri, "champion").version) == v1
    refused = mlflow.MlflowClient(uri, uri).get_model_version(MODEL, v2)
    assert refused.tags["hala.promotion.decision"] == "refused" and "0.5250" in refused.tags["hala.promotion.reason"]


def test_a_better_challenger_is_promoted_and_rollback_restores_the_previous_champion(store):
    uri = store[0]
    v1 = _register(store, 0.52, 0.50)
    promote(uri, MODEL, Promotion())
    v2 = _register(store, 0.60, 0.50)
    decision = promote(uri, MODEL, Promotion(margin=0.05))
    assert decision.version == v2 and decision.previous_champion == v1
    back = rollback(uri, MODEL)
    assert back.version == v1 and str(_alias(uri, "champion").version) == v1
    with pytest.raises(PromotionRefused, match="was the first champion; there is none before it"):
        rollback(uri, MODEL)


def test_floors_base_and_missing_metrics_refuse_with_numbers():
    policy = Promotion(margin=0.0, floors={"aratrust": 0.6, "exams": 0.4})
    assert judge_promotion({"average": 0.7, "base_average": 0.6, "aratrust": 0.65, "exams": 0.5}, None, policy) == []
    assert judge_promotion({"average": 0.7, "base_average": 0.6, "aratrust": 0.55, "exams": 0.5}, None, policy) == [
        "aratrust 0.5500 is under its floor 0.6"
    ]
    assert judge_promotion({"average": 0.5, "base_average": 0.6, "aratrust": 0.7}, None, policy) == [
        "average 0.5000 does not beat its base 0.6000 by the margin 0.0",
        "no score for exams, which has a floor of 0.4",
    ]
    assert judge_promotion({"base_average": 0.6}, None, policy) == ["no evaluation average (model metric average) on this version"]


def test_promote_command_both_ways(store, tmp_path):
    uri = store[0]
    _register(store, 0.52, 0.50)
    _register(store, 0.40, 0.50)  # the challenger now: worse than its base
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "hala", "promote", MODEL, "--tracking-uri", uri, *args], capture_output=True, text=True
    )
    refused = run()
    assert refused.returncode == 2 and "version 2 not promoted: average 0.4000 does not beat its base 0.5000" in refused.stderr
    accepted = run("--version", "1")
    assert accepted.returncode == 0 and "version 1 is now the champion" in accepted.stderr
    none_before = run("--rollback")
    assert none_before.returncode == 2 and "there is none before it" in none_before.stderr
    unknown = subprocess.run(
        [sys.executable, "-m", "hala", "promote", "no-such-model", "--tracking-uri", uri], capture_output=True, text=True
    )
    assert unknown.returncode == 2 and "no-such-model" in unknown.stderr and "Traceback" not in unknown.stderr
