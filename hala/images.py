"""The single source of container image names: one image per stage family, plus the MLflow server.

A family is what a stage runs (images/README.md): ``base`` the light tasks, ``quantize``
llm-compressor, ``vllm`` generation and evaluation, ``train`` TRL, ``merge`` mergekit. The
registry and tag can be set at compile time with HALA_IMAGE_REGISTRY and HALA_IMAGE_TAG (for
example a private mirror); ``make images`` tags its builds under ``localhost``, where
``hala run --runner docker`` looks for them.
"""

from __future__ import annotations

import os
import re

from hala import __version__

FAMILIES = ("base", "quantize", "vllm", "train", "merge")
DEFAULT_REGISTRY = "ghcr.io/hala-mlops"
LOCAL_REGISTRY = "localhost"
# The MLflow server image is tagged with its MLflow version (images/mlflow.in), not hala's.
MLFLOW_VERSION = "3.17.2"
_NAME = re.compile(r"^(?P<registry>.+)/hala-(?P<family>[a-z]+):(?P<tag>[^:/]+)$")


def image(family: str, registry: str | None = None, tag: str | None = None) -> str:
    if family not in FAMILIES:
        raise ValueError(f"unknown image family {family!r}; known: {', '.join(FAMILIES)}")
    registry = registry or os.environ.get("HALA_IMAGE_REGISTRY", DEFAULT_REGISTRY)
    tag = tag or os.environ.get("HALA_IMAGE_TAG", __version__)
    return f"{registry}/hala-{family}:{tag}"


def mlflow_image(registry: str | None = None) -> str:
    return f"{registry or os.environ.get('HALA_IMAGE_REGISTRY', DEFAULT_REGISTRY)}/hala-mlflow:{MLFLOW_VERSION}"


def family_of(name: str) -> str | None:
    """The family of a hala stage image name, or None for any other image."""
    match = _NAME.match(name)
    return match["family"] if match and match["family"] in FAMILIES else None


def retarget(name: str, registry: str, tag: str | None = None) -> str:
    """The same family's image in ``registry`` (and ``tag``); other images are returned unchanged."""
    match = _NAME.match(name)
    if not match or match["family"] not in FAMILIES:
        return name
    return image(match["family"], registry, tag or match["tag"])
