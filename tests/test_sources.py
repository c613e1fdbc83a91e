"""Pinned, checked and recorded sources: the real huggingface_hub client against a stand-in hub, real S3, real MLflow."""

import io
import json

import mlflow
import pytest
import yaml

from hala.corpora import count_rows, read_rows
from hala.models import resolve_model
from hala.preflight import PreflightError, check_run
from hala.recipe import DatasetRef, load_recipe, parse_recipe
from hala.sources import SourceError, hub_split_rows, run_sources, s3_version
from hala.tiny import tiny_model_path
from tests.hub_standin import Hub, HubServer, Repo, commit_of

MAIN, V1 = commit_of("second"), commit_of("first")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A hub with a public model (main and tag v1), a gated model, and a dataset whose card counts its rows."""
    import huggingface_hub.constants as constants

    hub = Hub(granted={"hf_granted"})
    hub.add_model_folder("acme/judge", tiny_model_path("judge"), refs={"main": MAIN, "v1": V1})
    hub.add_model_folder("acme/gated", tiny_model_path("judge"), refs={"main": MAIN}, gated=True)
    card = {"dataset_info": [{"config_name": "ar-en", "splits": [{"name": "train", "num_examples": 1000}]}]}
    hub.repos["acme/data"] = Repo("dataset", refs={"main": MAIN}, card=card)
    with HubServer(hub) as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield hub


def test_a_hub_model_is_read_at_its_pinned_commit_and_the_stage_run_records_it(hub, tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run() as run:
        pinned = resolve_model("acme/judge", "v1")
        newest = resolve_model("acme/judge")
    assert pinned.endswith(f"/snapshots/{V1}") and newest.endswith(f"/snapshots/{MAIN}")
    assert json.loads(open(f"{pinned}/config.json").read())["model_type"]  # a loadable folder came down
    # the last read wins on one run; the registry joins what different stage runs read
    assert mlflow.get_run(run.info.run_id).data.tags["hala.source.acme/judge"] == MAIN
    assert not any(r.endswith((".bin", ".gguf")) for r in hub.requests)


def test_preflight_names_gated_and_missing_models_and_revisions_that_do_not_exist(hub, tmp_path, monkeypatch):
    data = yaml.safe_load(load_recipe("smoke").to_yaml())
    data["judge"]["model"] = "acme/gated"
    data["translator"].update(base="acme/judge", revision="v9")
    data["students"]["models"][0].update(base="acme/none-such")
    data["students"]["models"][1].update(base="acme/judge", revision="v1")
    recipe = parse_recipe(data, "test")
    with pytest.raises(PreflightError) as err:
        check_run(recipe, None)
    lines = str(err.value).splitlines()
    assert lines[0].startswith("preflight: 3 of ")
    assert "- judge.model: model acme/gated: SourceError: model acme/gated is gated and HF_TOKEN is not set: accept its terms" in str(err.value)
    assert "- translator.base: model acme/judge: SourceError: model acme/judge: revision 'v9' does not exist" in lines
    assert "- students.models[0].base: model acme/none-such: SourceError: model acme/none-such does not exist, or is private and HF_TOKEN is not set" in lines
    monkeypatch.setenv("HF_TOKEN", "hf_someone_else")
    with pytest.raises(PreflightError, match="is gated and the token in HF_TOKEN has no access to it"):
        check_run(recipe, None)
    # With the granted token and real revisions every model passes, and each check names the commit it will read.
    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    data["translator"]["revision"] = "main"
    data["students"]["models"][0]["base"] = "tiny:student-s"
    passed = check_run(parse_recipe(data, "test"), None)
    assert f"judge.model: model acme/gated at {MAIN}" in passed
    assert f"students.models[1].base: model acme/judge at {V1}" in passed


def test_a_gated_hub_dataset_is_named_and_a_split_size_comes_from_its_card(hub):
    hub.repos["acme/data"].gated = True
    data = yaml.safe_load(load_recipe("smoke").to_yaml())
    data["corpus"]["datasets"][0] = {"path": "acme/data", "layout": "sharegpt", "revision": "main"}
    with pytest.raises(PreflightError, match=r"- corpus.datasets\[0\]: dataset acme/data: SourceError: dataset acme/data is gated"):
        check_run(parse_recipe(data, "test"), None)
    hub.repos["acme/data"].gated = False
    assert hub_split_rows("acme/data", "ar-en", "train") == 1000
    assert hub_split_rows("acme/data", "ar-en", "test") is None  # the card does not say
    assert count_rows(DatasetRef(path="acme/data", subset="ar-en", skip=100)) == 900


def test_an_s3_dataset_pinned_by_etag_stops_when_the_object_changes(s3_env):
    client, bucket = s3_env["client"], s3_env["bucket"]
    body = b'{"instruction": "Say hi.", "response": "Hi."}\n'
    client.put_object(bucket, "data/pinned.jsonl", io.BytesIO(body), len(body))
    uri = f"s3://{bucket}/data/pinned.jsonl"
    etag = s3_version(uri, None, folder=False)
    assert [row for _, row in read_rows(DatasetRef(path=uri, revision=etag))] == [json.loads(body)]
    changed = b'{"instruction": "Say bye.", "response": "Bye."}\n'
    client.put_object(bucket, "data/pinned.jsonl", io.BytesIO(changed), len(changed))
    with pytest.raises(SourceError, match=rf"^{uri} changed: it is \w+ now, the recipe pins {etag}$"):
        list(read_rows(DatasetRef(path=uri, revision=etag)))


def test_revision_is_refused_for_sources_that_cannot_be_pinned():
    data = yaml.safe_load(load_recipe("smoke").to_yaml())
    data["bootstrap"]["dataset"]["revision"] = "main"
    with pytest.raises(ValueError, match=r"^recipe test: bootstrap.dataset: revision pins hub and s3:// sources; 'bundled:smoke/instructions_en.jsonl' is bundled$"):
        parse_recipe(data, "test")


def _numbered(tmp_path, n):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Q{i}", "response": f"A{i}"}) + "\n" for i in range(1, n + 1)))
    return str(path)


def test_a_sample_takes_exactly_limit_rows_spread_over_the_split_the_same_on_every_read(tmp_path):
    path = _numbered(tmp_path, 1000)
    ds = DatasetRef(path=path, limit=100, sample={"of": 1000, "seed": 7})
    rows = [n for n, _ in read_rows(ds)]
    assert len(rows) == 100 and rows == sorted(rows) and len(set(rows)) == 100
    assert rows == [n for n, _ in read_rows(ds)]  # deterministic
    assert rows != [n for n, _ in read_rows(DatasetRef(path=path, limit=100, sample={"of": 1000, "seed": 8}))]
    # spread over the whole split, not its head: about a tenth of each quarter
    assert all(15 <= sum(q * 250 < n <= (q + 1) * 250 for n in rows) <= 35 for q in range(4))
    first = DatasetRef(path=path, limit=100)
    assert [n for n, _ in read_rows(first)] == list(range(1, 101))


def test_preflight_refuses_a_sample_of_more_rows_than_the_split_holds(tmp_path):
    data = yaml.safe_load(load_recipe("smoke").to_yaml())
    data["corpus"]["datasets"][0] = {"path": _numbered(tmp_path, 50), "layout": "instruction", "limit": 10, "sample": {"of": 60}}
    with pytest.raises(PreflightError, match=r"DataError: sample.of is 60 but the split holds 50 rows after skip; give sample.of: 50"):
        check_run(parse_recipe(data, "test"), None)


def test_preflight_probes_the_first_rows_with_the_recipe_entry(tmp_path):
    data = yaml.safe_load(load_recipe("smoke").to_yaml())
    # a file of instruction rows read as ShareGPT: the wrong layout, found before any stage runs
    data["corpus"]["datasets"][0] = {"path": _numbered(tmp_path, 30), "layout": "sharegpt"}
    with pytest.raises(PreflightError) as err:
        check_run(parse_recipe(data, "test"), None)
    assert "DataError: dataset " in str(err.value) and "no conversations in its first 20 rows (layout sharegpt); row 1: conversations or items is missing or empty" in str(err.value)


def test_run_sources_joins_what_every_stage_run_recorded(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run() as parent:
        for stage, version in (("a", "1"), ("b", "1"), ("c", "2")):
            with mlflow.start_run(run_name=stage, nested=True):
                mlflow.set_tag("hala.source.acme/judge", version)
                mlflow.set_tag("hala.source.tiny_teacher", "t")
                mlflow.set_tag("other", "x")
    assert run_sources(uri, parent.info.run_id) == {"hala.source.acme/judge": "1,2", "hala.source.tiny_teacher": "t"}


def test_a_short_split_read_with_a_sample_is_named(tmp_path, caplog):
    ds = DatasetRef(path=_numbered(tmp_path, 20), limit=10, sample={"of": 40})
    taken = list(read_rows(ds))
    assert len(taken) < 10 and "sample.of is 40 but it holds 20 rows after skip" in caplog.text


def test_the_plan_reads_a_hub_config_at_its_revision_and_stands_in_shipped_facts_for_a_gated_one(hub):
    from hala import plan

    plan.hub_reachable.cache_clear()
    try:
        shape, source = plan.model_shape("acme/judge", "v1")
        assert source == "hub" and "GET /acme/judge/resolve/v1/config.json" in hub.requests
        local, _ = plan.model_shape(f"{tiny_model_path('judge')}")
        assert shape == local
        # Gated without a token: a model hala ships facts for is planned from them, any other is named.
        hub.add_model_folder("Qwen/Qwen2.5-3B-Instruct", tiny_model_path("judge"), refs={"main": MAIN}, gated=True)
        shipped, source = plan.model_shape("Qwen/Qwen2.5-3B-Instruct")
        assert source == "shipped" and shipped.parameters == 3_085_938_688
        with pytest.raises(plan.PlanError, match="^model acme/gated: cannot read its config.json: the model is gated and HF_TOKEN has no access"):
            plan.model_shape("acme/gated")
        with pytest.raises(plan.PlanError, match=r"^model acme/judge: cannot read its config.json \(RevisionNotFoundError\)"):
            plan.model_shape("acme/judge", "v9")
    finally:
        plan.hub_reachable.cache_clear()
