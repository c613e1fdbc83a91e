"""What a finished training run must have saved: the base model's architecture, finite weights that moved."""

from __future__ import annotations

import torch


def assert_trained(saved, base) -> None:
    """``saved`` holds a whole model with ``base``'s parameters, all finite, some changed by training."""
    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(saved).state_dict()
    original = AutoModelForCausalLM.from_pretrained(base).state_dict()
    assert trained.keys() == original.keys()
    assert all(trained[k].shape == original[k].shape and torch.isfinite(trained[k]).all() for k in original)
    moved = [k for k in original if not torch.equal(trained[k], original[k])]
    assert len(moved) > len(original) // 2, f"only {len(moved)} of {len(original)} tensors changed"
