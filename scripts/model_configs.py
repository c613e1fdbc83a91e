"""Refresh the shapes in hala/data/model_configs.json from the configs it holds (`make model-configs`).

The file ships the config.json facts of the shipped recipes' models, so that the capacity plan
works offline; each entry's ``shape`` is what hala.plan.shape_from_config makes of its config
(transformers builds the model on the meta device), stored so that ``hala plan`` need not
import transformers. ``--check`` fails when a stored shape is stale.
"""

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hala.plan import shape_from_config  # noqa: E402

FILE = ROOT / "hala" / "data" / "model_configs.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a stored shape differs instead of writing")
    args = parser.parse_args()
    data = json.loads(FILE.read_text(encoding="utf-8"))
    stale = []
    for name, entry in data["models"].items():
        shape = asdict(shape_from_config(entry["config"]))
        published = entry.get("published_parameters")
        if published and shape["parameters"] != published:
            sys.exit(f"model_configs: {name}: its config builds {shape['parameters']:,} parameters, the model card says {published:,}")
        if entry.get("shape") != shape:
            stale.append(name)
            entry["shape"] = shape
    if args.check:
        if stale:
            sys.exit(f"model_configs: stale shapes for {', '.join(stale)}; run scripts/model_configs.py")
        print(f"model_configs: {len(data['models'])} shapes current")
        return
    FILE.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"model_configs: wrote {FILE.relative_to(ROOT)} ({len(stale)} shape(s) changed)")


if __name__ == "__main__":
    main()
