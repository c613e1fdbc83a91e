"""Shared test set-up: no network, and one cache of tiny models for the whole session."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Tests must never reach a hub: these make any accidental download fail at once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Tiny models are content-addressed, so a cache kept between runs is always consistent.
os.environ.setdefault("HALA_CACHE", str(ROOT / ".hala-cache"))


@pytest.fixture(scope="session")
def smoke_recipe():
    from hala.recipe import load_recipe

    return load_recipe("smoke")


@pytest.fixture(scope="session")
def tiny():
    """Path of a tiny model by name, built on first use."""
    from hala.tiny import tiny_model_path

    return lambda name: str(tiny_model_path(name))
