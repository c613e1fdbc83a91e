"""Registering a tiny model as hala's pipeline does (an MLflow Model, metrics on the model), for tests of what reads the registry."""

from __future__ import annotations

from hala.registry import log_checkpoint, register_version, requirements
from hala.tracking import registry_client, use_store


def register_tiny(uri: str, name: str, folder: str, metrics: dict[str, float] | None = None, alias: str = "challenger",
                  tags: dict[str, str] | None = None) -> str:  # fmt: skip
    """A new version of ``name`` from the checkpoint ``folder`` with ``metrics`` on its model; returns the version."""
    client = registry_client(uri)
    run_id = client.create_run(use_store(uri, "hala-test")).info.run_id
    model_id, _ = log_checkpoint(
        folder, name, run_id, card=f"# {name}\n", source_name=folder, license_text="test\n", params={}, metrics=metrics or {}, pip=requirements()
    )
    client.set_terminated(run_id)
    return register_version(name, model_id, run_id, tags or {}, alias)
