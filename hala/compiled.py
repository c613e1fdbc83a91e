"""What a compiled pipeline fixes, and the check that a run's recipe keeps it.

``hala compile`` turns parts of the recipe into the pipeline's shape: the students' fan-out,
the data stages' worker counts, each pod's GPUs (tensor parallelism, training processes and
nodes), the cluster section (resources, secrets, retries, caching), the pipeline root in the
bucket, and the stages that ``reuse`` replaces with importers. The run's ``recipe_json``
parameter can still be edited in the Kubeflow UI, and a run whose recipe disagrees with the
compiled shape would run, say, two students' stages for a recipe of three. The pipeline's
``open_run`` task therefore compares the two and refuses, naming every field that differs.
Everything else (learning rates, prompts, limits, thresholds, generation lengths, merge t,
evaluation, promotion, tracking) is read at run time and may change with each run.
"""

from __future__ import annotations

import json

from hala.recipe import Recipe

TENSOR_PARALLEL = ("teacher", "bootstrap", "judge", "translator", "corpus")
WORKERS = ("bootstrap", "judge", "corpus")


class CompiledRecipeMismatch(ValueError):
    """The run's recipe changes what the pipeline was compiled with; the message names the fields."""


def fixed_fields(recipe: Recipe) -> dict[str, object]:
    """The recipe's values that compiling made part of the pipeline, by dotted name."""
    fields: dict[str, object] = {
        "students.models[].name": [s.name for s in recipe.students.models],
        "students.parallelism": recipe.students.parallelism,
    }
    for section in TENSOR_PARALLEL:
        fields[f"{section}.generation.tensor_parallel_size"] = getattr(recipe, section).generation.tensor_parallel_size
    for section in WORKERS:
        fields[f"{section}.shards.workers"] = getattr(recipe, section).shards.workers
    for section in ("translator", "students"):
        training = getattr(recipe, section).training
        fields[f"{section}.training.processes"] = training.processes
        fields[f"{section}.training.nodes"] = training.nodes
    fields["storage"] = recipe.storage.model_dump(mode="json") if recipe.storage else None
    fields["cluster"] = recipe.cluster.model_dump(mode="json") if recipe.cluster else None
    fields["reuse"] = recipe.reuse.model_dump(mode="json")
    return fields


def compiled_fields_json(recipe: Recipe) -> str:
    """What ``hala compile`` writes into the pipeline as a constant of the open_run task."""
    return json.dumps(fixed_fields(recipe), sort_keys=True)


def _short(value: object) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def check_compiled(recipe: Recipe, compiled_json: str) -> None:
    """Raise CompiledRecipeMismatch when ``recipe`` differs from the compiled fields in any of them."""
    compiled = json.loads(compiled_json)
    submitted = json.loads(compiled_fields_json(recipe))
    differ = [name for name in sorted(compiled.keys() | submitted.keys()) if compiled.get(name) != submitted.get(name)]
    if differ:
        detail = "; ".join(f"{name}: compiled {_short(compiled.get(name))}, run {_short(submitted.get(name))}" for name in differ)
        raise CompiledRecipeMismatch(
            f"the run's recipe_json changes {len(differ)} field(s) the pipeline was compiled with ({detail}); "
            "compile the pipeline again from this recipe (hala compile or hala submit) instead of editing recipe_json"
        )
