"""The single source of container image names for pipeline components.

One image per stage family; the registry and tag can be set at compile time with
HALA_IMAGE_REGISTRY and HALA_IMAGE_TAG (for example to point at a private mirror).
"""

from __future__ import annotations

import os

from hala import __version__

FAMILIES = ("base", "vllm", "train", "quantize", "merge", "eval")


def image(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"unknown image family {family!r}; known: {', '.join(FAMILIES)}")
    registry = os.environ.get("HALA_IMAGE_REGISTRY", "ghcr.io/hala-mlops")
    tag = os.environ.get("HALA_IMAGE_TAG", __version__)
    return f"{registry}/hala-{family}:{tag}"
