"""Run lighteval's own OALL v2 tasks on a local model and local data; print what it chose, per item.

Runs in its own environment (.venv-lighteval, lighteval 0.13.0: its pins clash with the
project's), so it imports nothing from hala. lighteval's task configurations are taken from its
Arabic task module unchanged, except that each reads its dataset from a local folder laid out as
on the hub (README configs, a folder per subset) instead of the hub.

    python tests/lighteval_reference.py MODEL OUT.json TASK=DATASET_DIR ...

TASK is a line of OALL_v2_tasks.txt without its suite and shots (``alghafa:meta_ar_msa``).
"""

from __future__ import annotations

import copy
import json
import sys
import types
from unittest import mock


def main(model: str, out: str, specs: list[str]) -> None:
    from lighteval.logging.evaluation_tracker import EvaluationTracker
    from lighteval.models.transformers.transformers_model import TransformersModelConfig
    from lighteval.pipeline import ParallelismManager, Pipeline, PipelineParameters
    from lighteval.tasks.multilingual.tasks.arabic import TASKS_TABLE

    local = dict(spec.split("=", 1) for spec in specs)
    by_name = {config.name: config for config in TASKS_TABLE}
    missing = sorted(set(local) - set(by_name))
    if missing:
        raise SystemExit(f"not lighteval OALL tasks: {', '.join(missing)}")
    module = types.ModuleType("hala_local_oall")
    module.TASKS_TABLE = []
    for name, path in local.items():
        config = copy.deepcopy(by_name[name])  # (the task classes take no hf_repo argument, so no dataclasses.replace)
        config.hf_repo = path
        module.TASKS_TABLE.append(config)
    # lighteval's registry imports every task module, and tiny_benchmarks fetches a file from GitHub
    # when imported; it is never used here, so it is answered "not found" instead of reaching the network.
    with mock.patch("requests.get", return_value=types.SimpleNamespace(status_code=404)):
        pipeline = Pipeline(
            tasks=",".join(f"{name}|0" for name in local),
            pipeline_parameters=PipelineParameters(launcher_type=ParallelismManager.NONE, custom_tasks_directory=module),
            evaluation_tracker=EvaluationTracker(output_dir=str(out) + ".tracker", save_details=False),
            model_config=TransformersModelConfig(model_name=model, dtype="float32", batch_size=4),
        )
    pipeline.evaluate()
    results = pipeline.get_results()["results"]
    report = {"chat_template": bool(pipeline.model.use_chat_template), "tasks": {}}
    for full_name, details in pipeline.get_details().items():
        name = full_name.rsplit("|", 1)[0]
        items = []
        for detail in details:
            doc, response = detail.doc, detail.model_response
            logprobs = list(response.logprobs[: len(doc.choices)])
            normalised = [lp / len(choice) for lp, choice in zip(logprobs, doc.choices, strict=True)]
            items.append(
                {
                    "query": doc.query,
                    # the context lighteval scores the choices after (the chat template applied when there is one)
                    "prompt": pipeline.model.prompt_manager.prepare_prompt(doc),
                    "choices": list(doc.choices),
                    "gold": doc.gold_index,
                    "logprobs": logprobs,
                    "chosen": max(range(len(normalised)), key=normalised.__getitem__),
                    "metric": {k: float(v) for k, v in detail.metric.items()},
                }
            )
        # (results are keyed "task:0", details "task|0")
        scores = {k: float(v) for k, v in results[f"{name}:0"].items()}
        # The metric is named after its normalisation: acc with LogProbCharNorm, which is OALL's acc_norm.
        (acc_norm,) = [v for k, v in scores.items() if "LogProbCharNorm" in k and not k.endswith("_stderr")]
        report["tasks"][name] = {"acc_norm": acc_norm, "results": scores, "items": items}
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(report, fh, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
