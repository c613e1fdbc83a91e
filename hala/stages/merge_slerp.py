"""Stage 7: slerp-merge a fine-tuned student with its base using mergekit.

Before merging, the two models must agree on architecture, tensor shapes and vocabulary;
mergekit fails obscurely (or merges nonsense) when vocabularies differ, so we refuse first.
"""

from __future__ import annotations

import json
from pathlib import Path

from hala.recipe import Merge


class MergeCompatibilityError(ValueError):
    """The two models cannot be merged; the message names the first disagreement."""


def check_mergeable(base: Path, other: Path) -> None:
    from safetensors import safe_open
    from transformers import AutoTokenizer

    cfg_a = json.loads((base / "config.json").read_text())
    cfg_b = json.loads((other / "config.json").read_text())
    for key in ("model_type", "architectures", "vocab_size", "hidden_size", "num_hidden_layers"):
        if cfg_a.get(key) != cfg_b.get(key):
            raise MergeCompatibilityError(f"cannot merge: {key} differs ({cfg_a.get(key)} vs {cfg_b.get(key)})")
    if AutoTokenizer.from_pretrained(str(base)).get_vocab() != AutoTokenizer.from_pretrained(str(other)).get_vocab():
        raise MergeCompatibilityError("cannot merge: the tokenizers' vocabularies differ")

    def shapes(folder: Path) -> dict[str, tuple]:
        out = {}
        for f in sorted(folder.glob("*.safetensors")):
            with safe_open(str(f), "pt") as st:
                out.update({k: tuple(st.get_slice(k).get_shape()) for k in st.keys()})
        return out

    sa, sb = shapes(base), shapes(other)
    if sa.keys() != sb.keys():
        missing = sorted(sa.keys() ^ sb.keys())[:3]
        raise MergeCompatibilityError(f"cannot merge: tensor names differ, e.g. {', '.join(missing)}")
    for name, shape in sa.items():
        if sb[name] != shape:
            raise MergeCompatibilityError(f"cannot merge: tensor {name} has shape {shape} vs {sb[name]}")


def merge_config(base: Path, other: Path, merge: Merge, t: float) -> dict:
    # mergekit treats a relative path as a hub id, so both paths are made absolute.
    return {
        "merge_method": merge.method,
        "base_model": str(Path(base).resolve()),
        "models": [{"model": str(Path(base).resolve())}, {"model": str(Path(other).resolve())}],
        "parameters": {"t": t},
        "dtype": merge.dtype,
        "tokenizer_source": "base",
    }


def merge_slerp(base: str, other: str, merge: Merge, out_dir: Path, t: float | None = None) -> dict:
    """Write slerp(base, other, t) to ``out_dir``; returns the merge description (base, other, t, config)."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge
    from transformers import AutoTokenizer

    t = merge.candidates[0] if t is None else t
    base_path, other_path = Path(base), Path(other)
    check_mergeable(base_path, other_path)
    config = merge_config(base_path, other_path, merge, t)
    run_merge(
        MergeConfiguration.model_validate(config),
        str(out_dir),
        MergeOptions(copy_tokenizer=True, write_model_card=True, lazy_unpickle=False, quiet=True),
    )
    # mergekit copies the base's tokenizer; the vocabularies were checked equal, but the chat template
    # the model was fine-tuned with (perhaps the recipe's, for a base that had none) is the fine-tuned one's.
    AutoTokenizer.from_pretrained(str(other_path)).save_pretrained(str(out_dir))
    return {"base": config["base_model"], "other": str(other_path.resolve()), "t": t, "config": config}


def candidate_folder(t: float) -> str:
    return f"t{t:.2f}"


def merge_sweep(base: str, other: str, merge: Merge, out_dir: Path) -> list[dict]:
    """One slerp per t of the recipe, each in ``out_dir/t<t>``; returns their descriptions (with ``folder``)."""
    merges = []
    for t in merge.candidates:
        description = merge_slerp(base, other, merge, Path(out_dir) / candidate_folder(t), t=t)
        merges.append({**description, "folder": candidate_folder(t)})
    return merges
