"""Thin KFP components: each one parses the recipe, opens its MLflow run and calls one hala stage."""

import functools

from kfp import dsl

from hala.images import image


def stage_component(family: str):
    """``@dsl.component`` for a stage that runs in its family's image (hala.images).

    No ``pip install kfp`` preamble: the images carry the locked kfp, and a preamble would install
    from the network at every pod start (impossible on an air-gapped cluster) and could replace
    the image's kfp with another version.
    """
    return functools.partial(dsl.component, base_image=image(family), install_kfp_package=False)
