"""The offline "tiny world": small models built on this machine for the smoke recipe and tests.

No hub is reachable here, so ``tiny:NAME`` model references are built locally from bundled
text: a byte-level BPE tokenizer with a ChatML template, random-init LFM2 configs, and a
teacher and a judge trained briefly on the bundled data so that what they produce means
something (the FP8 gate compares real translations; the judge's verdicts are parseable).
Models are built once per content hash and cached, guarded by a file lock so that parallel
pipeline tasks do not build the same model twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hala import cache_home
from hala.chat_templates import CHATML
from hala.corpora import bundled_path, read_jsonl
from hala.recipe import Bootstrap, Judge, Training

log = logging.getLogger(__name__)

# Bump when a builder changes so cached models are rebuilt.
BUILDER_VERSION = "6"
# Rows of smoke/parallel_en_ar.jsonl from this one on are held out of the tiny teacher's training.
HELD_OUT = 150
SPECIAL_TOKENS = ["<|pad|>", "<|startoftext|>", "<|im_end|>", "<|im_start|>"]


@dataclass(frozen=True)
class TinySpec:
    hidden_size: int
    layers: int
    heads: int
    seed: int
    trained_as: str | None = None  # "teacher", "judge" or None for a random-init base
    init_from: str | None = None  # start from another tiny model instead of random weights


TINY_MODELS: dict[str, TinySpec] = {
    "teacher": TinySpec(hidden_size=192, layers=4, heads=4, seed=11, trained_as="teacher"),
    # The judge starts from the teacher, which already knows which sentences translate which:
    # a few epochs then teach it to say so (from random weights it needs 3x the time and still
    # accepts most misaligned pairs).
    "judge": TinySpec(hidden_size=192, layers=4, heads=4, seed=12, trained_as="judge", init_from="teacher"),
    "translator-base": TinySpec(hidden_size=128, layers=4, heads=4, seed=13),
    # Heads of 32: vLLM's CPU attention has no kernel for 16 or 24 ("Unsupported CPU attention
    # configuration: head_dim=24"); the real LFM2 sizes all have heads of 64.
    "student-s": TinySpec(hidden_size=64, layers=2, heads=2, seed=14),
    "student-m": TinySpec(hidden_size=96, layers=4, heads=3, seed=15),
}


def cache_root() -> Path:
    return cache_home() / "tiny"


def _data_files() -> list[Path]:
    root = bundled_path("smoke")
    return sorted(p for p in root.rglob("*.jsonl"))


def _world_hash() -> str:
    digest = hashlib.sha256(BUILDER_VERSION.encode())
    for f in _data_files():
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:12]


def teacher_pairs() -> list[tuple[str, str]]:
    """The English-Arabic pairs of the bundled data the tiny teacher learns to translate: all but the
    held-out rows of parallel_en_ar.jsonl (from HELD_OUT on), which the smoke recipe's FP8 gate
    and translator evaluation read. A gate on rows the teacher had learned by heart would score
    100 for both copies and could tell nothing apart."""
    smoke = bundled_path("smoke")
    rows = read_jsonl(smoke / "parallel_en_ar.jsonl")[:HELD_OUT]
    pairs = [(r["translation"]["en"], r["translation"]["ar"]) for r in rows]
    for r in read_jsonl(smoke / "instructions_en.jsonl"):
        pairs += [(r["instruction"], r["instruction_ar"]), (r["response"], r["response_ar"])]
    more = read_jsonl(smoke / "instructions_more_en.jsonl")
    refs = read_jsonl(smoke / "instructions_more_ar_reference.jsonl")
    for conv, ref in zip(more, refs, strict=True):
        pairs += [(conv["conversations"][0]["value"], ref["human"]), (conv["conversations"][1]["value"], ref["gpt"])]
    return pairs


def _corpus_lines() -> list[str]:
    lines = []
    for f in _data_files():
        for row in read_jsonl(f):
            lines.extend(_strings(row))
    return lines


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def build_tokenizer(out_dir: Path, vocab_size: int = 2048):
    """A byte-level BPE tokenizer trained on the bundled English and Arabic text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Prompt words (instructions to translate and judge) must tokenize well too.
    extra = [Bootstrap.model_fields["prompt"].default, Judge.model_fields["prompt"].default, "ACCEPT", "REJECT"]
    tok.train_from_iterator(_corpus_lines() + extra, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        bos_token="<|startoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHATML
    fast.save_pretrained(str(out_dir))
    return fast


# The real model every tiny LFM2 is shaped like: its published config.json, shipped whole.
LFM2_TEMPLATE = "LiquidAI/LFM2-350M"


def lfm2_config(spec: TinySpec, tokenizer):
    """A tiny LFM2 config carrying every key of the real one (the shipped LFM2-350M config.json).

    vLLM's LFM2 reads keys that transformers' own Lfm2Config never writes (``block_dim``,
    ``conv_dim``); a config made from transformers' defaults does not load there. So the real
    file is the template and only the sizes are the tiny world's. The feed-forward width is kept
    as given (``block_auto_adjust_ff_dim`` off: the real rule would round it to a multiple of 256).
    """
    from transformers import Lfm2Config

    from hala.plan import shipped_models

    real = dict(shipped_models()[LFM2_TEMPLATE]["config"])
    attention = [i for i in range(spec.layers) if i % 2 == 1]
    tiny = {
        "vocab_size": len(tokenizer),
        "hidden_size": spec.hidden_size,
        "block_dim": spec.hidden_size,
        "conv_dim": spec.hidden_size,
        "conv_dim_out": spec.hidden_size,
        "block_ff_dim": spec.hidden_size * 2,
        "block_auto_adjust_ff_dim": False,
        "num_hidden_layers": spec.layers,
        "full_attn_idxs": attention,
        "num_attention_heads": spec.heads,
        "num_heads": spec.heads,
        "num_key_value_heads": max(1, spec.heads // 2),
        "max_position_embeddings": 1024,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "tie_word_embeddings": True,
    }
    unknown = set(tiny) - set(real) - {"tie_word_embeddings"}
    if unknown:
        raise ValueError(f"tiny LFM2: {', '.join(sorted(unknown))} not in {LFM2_TEMPLATE}'s config.json")
    # The weights' dtype is the tiny world's own (float32, as the CPU trains): save_pretrained writes
    # it as transformers 5 names the key (dtype).
    real.pop("torch_dtype", None)
    return Lfm2Config(**(real | tiny))


def _random_model(spec: TinySpec, tokenizer, out_dir: Path) -> None:
    import torch
    from transformers import Lfm2ForCausalLM

    torch.manual_seed(spec.seed)
    model = Lfm2ForCausalLM(lfm2_config(spec, tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))


def _teacher_conversations() -> list[list[dict[str, str]]]:
    prompt = Bootstrap.model_fields["prompt"].default
    return [
        [{"role": "user", "content": prompt.format(text=en)}, {"role": "assistant", "content": ar}]
        for en, ar in teacher_pairs()
    ]


def _judge_conversations() -> list[list[dict[str, str]]]:
    """ACCEPT for true pairs; REJECT for mismatched pairs and untranslated copies."""
    prompt = Judge.model_fields["prompt"].default
    pairs = teacher_pairs()
    rng = random.Random(7)
    shuffled = pairs[:]
    rng.shuffle(shuffled)
    convs = []
    for i, ((en, ar), (_, other_ar)) in enumerate(zip(pairs, shuffled, strict=True)):
        convs.append([{"role": "user", "content": prompt.format(source=en, target=ar)}, {"role": "assistant", "content": "ACCEPT"}])
        # Negatives for every other pair keep the two verdicts roughly balanced.
        if i % 2 == 0 and other_ar != ar:
            convs.append([{"role": "user", "content": prompt.format(source=en, target=other_ar)}, {"role": "assistant", "content": "REJECT"}])
    # Untranslated copies for every other pair: with fewer, the judge learned the copies it saw, not copying.
    for en, _ in pairs[::2]:
        convs.append([{"role": "user", "content": prompt.format(source=en, target=en)}, {"role": "assistant", "content": "REJECT"}])
    return convs


_TRAINING = {
    "teacher": Training(epochs=20, learning_rate=3e-3, batch_size=16, max_length=192, warmup_ratio=0.05, seed=0),
    "judge": Training(epochs=4, learning_rate=2e-3, batch_size=16, max_length=192, warmup_ratio=0.05, seed=0),
}


def _build(name: str, spec: TinySpec, out_dir: Path) -> None:
    from hala.stages.train_sft import train_sft

    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        tmp_path = Path(tmp)
        if spec.init_from is not None:
            if spec.trained_as is None:
                raise ValueError(f"tiny model {name}: init_from needs training, or it would only be a copy")
            init_dir = tiny_model_path(spec.init_from)
        else:
            tokenizer = build_tokenizer(tmp_path / "tokenizer")
            init_dir = tmp_path / "init"
            _random_model(spec, tokenizer, init_dir)
        if spec.trained_as is None:
            final = init_dir
        else:
            convs = _teacher_conversations() if spec.trained_as == "teacher" else _judge_conversations()
            final = tmp_path / "trained"
            log.info("training tiny %s on %d bundled examples", name, len(convs))
            train_sft(str(init_dir), convs, _TRAINING[spec.trained_as], final)
            shutil.rmtree(final / "checkpoints", ignore_errors=True)
        (final / "hala_tiny.json").write_text(json.dumps({"name": name, "world": _world_hash()}))
        # Rename last so a crash never leaves a half-built model where a finished one is expected.
        final.rename(out_dir)


def tiny_model_path(name: str) -> Path:
    """Local folder of the tiny model ``name``, building it on first use."""
    from filelock import FileLock

    if name not in TINY_MODELS:
        raise ValueError(f"unknown tiny model {name!r}; known: {', '.join(TINY_MODELS)}")
    root = cache_root() / _world_hash()
    out_dir = root / name
    # A finished model is only read: no lock, so a read-only copy of the cache serves too (the
    # tiny world mounted into containers by ``hala run --runner docker``).
    if (out_dir / "hala_tiny.json").is_file():
        return out_dir
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{name}.lock")):
        if not (out_dir / "hala_tiny.json").is_file():
            shutil.rmtree(out_dir, ignore_errors=True)
            _build(name, TINY_MODELS[name], out_dir)
    return out_dir


def build_attention_only(out_dir: Path, hidden_size: int = 64, layers: int = 2) -> str:
    """A random Llama (attention layers only) on the smoke tokenizer, for packing tests and benchmarks.

    Packing keeps its sequences exactly apart, unlike LFM2's convolutions without their kernel.
    Not cached: it takes a second, and benchmarks size it freely.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path("student-s"))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 3,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden_size // 64),
        num_key_value_heads=max(1, hidden_size // 128),
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return str(out_dir)
