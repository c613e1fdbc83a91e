"""The capacity plan: what each stage needs per GPU (and per pod) against what the recipe gives it.

Run before a pipeline starts (``hala plan``), so that a recipe whose teacher cannot fit its GPUs
is refused in seconds rather than after hours of earlier stages. Each stage is planned as its
code runs it: the engine its image has (vLLM in the vllm family on GPU nodes, transformers
elsewhere), the model's dtype, tensor parallelism, sequence length and batch, and, for
training, the strategy, the fp32 master weights and AdamW state the trainer keeps, and
gradient checkpointing. Model shapes come from the model's own config.json: read from a local
folder, from the hub when it answers, or from the facts shipped for the models of the shipped
recipes (``hala/data/model_configs.json``) so that the plan works offline.

The estimates are upper-bound sums, in GiB; ``benchmarks/plan_memory.py`` compares them with
measured peak memory where this machine can measure it.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from hala.recipe import Generation, Recipe, Resources, Training, classify_ref

GIB = 1024**3
# vLLM's defaults that the plan assumes, as hala's engines leave them: the share of GPU memory it
# claims, and the prefill tokens and sequences it profiles its activations with.
VLLM_MEMORY_UTILIZATION = 0.9
VLLM_BATCHED_TOKENS = 16384
VLLM_MAX_SEQS = 1024
# CUDA context, NCCL buffers and (vLLM) captured graphs: outside PyTorch's tensors.
GPU_RESERVE = 2 * GIB
# Sequence length lm-eval's loglikelihood batches are planned at (OALL v2 prompts are shorter).
EVAL_TOKENS = 2048

# Memory of the GPUs that Kubernetes' GPU feature discovery names in nvidia.com/gpu.product,
# as nvidia-smi reports it (MiB): the first pattern that matches the label wins.
KNOWN_GPUS: tuple[tuple[str, int], ...] = (
    (r"GH200|H200", 143771),
    (r"H100.*NVL", 95830),
    (r"H100", 81559),
    (r"A100.*80GB", 81920),
    (r"A100", 40960),
    (r"L40S", 46068),
    (r"L40", 46068),
    (r"A10G", 23028),
    (r"L4\b", 23034),
)
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
_QUANTITY = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>Ki|Mi|Gi|Ti|k|K|M|G|T)?$")
_UNITS = {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": GIB, "Ti": 1024**4, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


class PlanError(ValueError):
    """A stage that does not fit its pods, or a model or accelerator the plan cannot size; one line each."""


def quantity_bytes(text: str, where: str) -> int:
    """A Kubernetes memory quantity ('80Gi', '512G', '1.5Ti') in bytes."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise PlanError(f"{where}: {text!r} is not a memory quantity such as 80Gi or 512G")
    return int(float(match["n"]) * _UNITS[match["unit"]])


@dataclass(frozen=True)
class Shape:
    """What memory depends on in a decoder model, from its config.json."""

    parameters: int
    hidden_size: int
    intermediate_size: int
    layers: int
    attention_heads: int
    conv_layers: int  # LFM2's short-convolution layers: no KV cache, more activations than attention
    full_attention_layers: int  # layers whose KV cache grows with the sequence
    sliding_attention_layers: int  # layers whose KV cache stops at sliding_window
    sliding_window: int | None
    kv_heads: int
    head_dim: int
    vocab_size: int
    tied_embeddings: bool
    context: int  # max_position_embeddings: what vLLM reserves when no max_model_len is given
    largest_layer_parameters: int

    @property
    def embedding_parameters(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    def weight_bytes(self, dtype: str) -> int:
        if dtype == "fp8":
            # llm-compressor's FP8 leaves the embeddings and lm_head (recipe's ignore) in bf16.
            return (self.parameters - self.embedding_parameters) + 2 * self.embedding_parameters
        return self.parameters * {"bf16": 2, "fp32": 4}[dtype]

    def kv_bytes(self, tokens: int, tensor_parallel: int = 1) -> int:
        """KV cache of one sequence of ``tokens`` on one of ``tensor_parallel`` GPUs (bf16)."""
        # vLLM splits KV heads across the GPUs, and copies them when there are more GPUs than heads.
        heads = max(1, math.ceil(self.kv_heads / tensor_parallel))
        per_layer_token = 2 * heads * self.head_dim * 2
        window = min(tokens, self.sliding_window or tokens)
        return per_layer_token * (self.full_attention_layers * tokens + self.sliding_attention_layers * window)


def shape_from_config(config: dict) -> Shape:
    """The Shape of a config.json, sized by transformers itself: the model is built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    parameters = sum(p.numel() for p in model.parameters())
    blocks = next((m for name, m in model.named_modules() if name.endswith("layers") and isinstance(m, torch.nn.ModuleList)), None)
    largest = max((sum(p.numel() for p in b.parameters()) for b in blocks), default=0) if blocks is not None else 0
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    # The MLP's real width, as built: LFM2 derives it from its config's block_ff_dim (12288 -> 8192).
    widths = [m.out_features for m in (blocks or model).modules() if isinstance(m, torch.nn.Linear) and m.in_features == text.hidden_size]
    kinds = list(getattr(text, "layer_types", None) or ["full_attention"] * text.num_hidden_layers)
    heads = text.num_attention_heads
    return Shape(
        parameters=parameters,
        hidden_size=text.hidden_size,
        intermediate_size=max(widths, default=4 * text.hidden_size),
        layers=text.num_hidden_layers,
        attention_heads=heads,
        conv_layers=sum(k == "conv" for k in kinds),
        full_attention_layers=sum(k == "full_attention" for k in kinds),
        sliding_attention_layers=sum(k == "sliding_attention" for k in kinds),
        sliding_window=getattr(text, "sliding_window", None),
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
        vocab_size=text.vocab_size,
        tied_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
        context=getattr(text, "max_position_embeddings", None) or 4096,
        largest_layer_parameters=largest,
    )


@cache
def shipped_models() -> dict[str, dict]:
    """The config facts shipped for the models of the shipped recipes, by hub id."""
    text = resources.files("hala.data").joinpath("model_configs.json").read_text(encoding="utf-8")
    return json.loads(text)["models"]


@cache
def hub_reachable() -> bool:
    """Whether the hub can answer: not offline by setting, and its host takes a connection within seconds."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # only the client, through the proxy, can tell
    url = urlsplit(constants.ENDPOINT)
    try:
        # One quick probe, rather than the client's five retries per file on a machine without network.
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=3).close()
    except OSError:
        return False
    return True


def _hub_config(ref: str, revision: str | None) -> dict | None:
    """config.json from the hub, or None when the hub does not answer (offline, no network)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if not hub_reachable():
        return None
    try:
        path = hf_hub_download(ref, "config.json", revision=revision)
    except LocalEntryNotFoundError:
        return None
    except GatedRepoError:
        if ref in shipped_models():
            return None  # no token for its terms here; the shipped facts are the same model's
        raise PlanError(f"model {ref}: cannot read its config.json: the model is gated and HF_TOKEN has no access to it") from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as err:
        raise PlanError(f"model {ref}: cannot read its config.json ({type(err).__name__})") from None
    except Exception:  # noqa: BLE001 - offline mode, DNS, timeouts: the shipped facts stand in
        return None
    return json.loads(open(path, encoding="utf-8").read())


def model_shape(ref: str, revision: str | None = None) -> tuple[Shape, str]:
    """The model's Shape and where its config came from ('hub', 'shipped', 'local')."""
    kind = classify_ref(ref)
    if kind == "hub":
        config = _hub_config(ref, revision)
        if config is not None:
            return shape_from_config(config), "hub"
        known = shipped_models().get(ref)
        if known is None:
            raise PlanError(
                f"model {ref}: its config.json could not be read (the hub did not answer) and hala ships no facts for it; "
                "run the plan where the hub is reachable"
            )
        return Shape(**known["shape"]), "shipped"
    try:
        if kind == "s3":
            from hala.storage import fetch_file, join_uri

            # The config alone: the plan must not download the model it sizes.
            config_file = str(fetch_file(join_uri(ref, "config.json")))
        else:
            from hala.models import resolve_model

            config_file = f"{resolve_model(ref, revision)}/config.json"
        config = json.loads(open(config_file, encoding="utf-8").read())
    except (OSError, ValueError) as err:
        raise PlanError(f"model {ref}: cannot read its config.json ({str(err).splitlines()[0]})") from None
    return shape_from_config(config), "local"


# The hub's usual shard size (transformers' save_pretrained default before v5), assumed when a
# checkpoint's files cannot be listed.
HUB_SHARD = 5 * 10**9


def largest_shard(ref: str, revision: str | None, shape: Shape) -> tuple[int, bool]:
    """Bytes of the model's largest safetensors file, and whether they were measured (not assumed)."""
    kind = classify_ref(ref)
    if kind in ("local", "tiny"):
        from hala.models import resolve_model

        sizes = [f.stat().st_size for f in Path(resolve_model(ref, revision)).glob("*.safetensors")]
        if sizes:
            return max(sizes), True
    elif kind == "s3":
        from hala.storage import ObjectStore

        sizes = [size for key, size in ObjectStore.from_env().list(ref) if key.endswith(".safetensors")]
        if sizes:
            return max(sizes), True
    elif kind == "hub" and hub_reachable():
        try:
            from huggingface_hub import HfApi

            info = HfApi().model_info(ref, revision=revision, files_metadata=True)
            sizes = [f.size for f in info.siblings or [] if f.rfilename.endswith(".safetensors") and f.size]
            if sizes:
                return max(sizes), True
        except Exception:  # noqa: BLE001 - gated, offline, timeouts: the assumption stands in
            pass
    return min(HUB_SHARD, shape.weight_bytes("bf16")), False


def accelerator_memory(resources: Resources, where: str) -> int:
    """Bytes of memory of one accelerator of these pods: given, or known from the GPU product label."""
    if resources.accelerator_memory:
        return quantity_bytes(resources.accelerator_memory, f"{where}.accelerator_memory")
    product = resources.node_selector.get(GPU_PRODUCT_LABEL)
    if product:
        for pattern, mib in KNOWN_GPUS:
            if re.search(pattern, product):
                return mib * 1024**2
    named = f"the accelerator {product!r}" if product else f"the accelerator of {where} (no {GPU_PRODUCT_LABEL} node selector)"
    raise PlanError(
        f"{where}: the plan does not know the memory of {named}; set {where}.accelerator_memory (e.g. 80Gi)"
    )


@dataclass
class Row:
    stage: str
    model: str
    engine: str
    device: str  # "GPU" (per accelerator) or "CPU" (the pod's memory)
    count: int  # GPUs the stage uses (1 for a CPU row)
    need: int  # bytes per device
    have: int | None  # bytes per device; None: the recipe does not say (no limit is checked)
    parts: dict[str, int] = field(default_factory=dict)
    fix: str = ""

    @property
    def fits(self) -> bool:
        return self.have is None or self.need <= self.have

    def refusal(self) -> str:
        where = f"per GPU ({self.count} GPU{'s' if self.count > 1 else ''})" if self.device == "GPU" else "of pod memory"
        top = max(self.parts, key=self.parts.get) if self.parts else ""
        return (
            f"{self.stage}: {self.model} on {self.engine} needs {self.need / GIB:.1f} GiB {where}, the recipe gives "
            f"{self.have / GIB:.1f} GiB (largest part: {top} {self.parts.get(top, 0) / GIB:.1f} GiB); {self.fix}"
        )


@dataclass
class Plan:
    rows: list[Row]
    sources: dict[str, str]  # model -> where its config came from
    # Models whose config could not be read here, with the reason (a lenient plan only): their stages
    # are not sized, and the pipeline's preflight, in the cluster, sizes them.
    unsized: dict[str, str] = field(default_factory=dict)

    @property
    def refused(self) -> list[Row]:
        return [r for r in self.rows if not r.fits]

    def check(self) -> None:
        if self.refused:
            lines = [r.refusal() for r in self.refused]
            raise PlanError(f"capacity plan: {len(lines)} stage(s) do not fit: " + " | ".join(lines))

    def to_dict(self) -> dict:
        return {"rows": [asdict(r) | {"fits": r.fits} for r in self.rows], "sources": self.sources, "unsized": self.unsized}


def _vllm_need(shape: Shape, dtype: str, tp: int, max_len: int) -> dict[str, int]:
    # What vLLM's start-up check adds up: its weights shard, activations of one profiling batch, and
    # room in the KV cache for at least one sequence of max_model_len.
    activations = VLLM_BATCHED_TOKENS * (4 * shape.hidden_size + 2 * shape.intermediate_size // tp) * 2
    sampler = VLLM_MAX_SEQS * shape.vocab_size * 4 // tp
    return {
        "weights": shape.weight_bytes(dtype) // tp,
        "kv cache (one sequence)": shape.kv_bytes(max_len, tp),
        "activations": activations + sampler,
        "cuda/nccl": GPU_RESERVE,
    }


def _transformers_need(shape: Shape, dtype: str, batch: int, prompt: int, new: int, device: str, *, scoring: bool = False) -> dict[str, int]:
    """Bytes of generate() on one device: the whole model, the batch's KV cache and the prefill's peak.

    ``scoring``: lm-eval's loglikelihood instead, which needs the logits of every position
    (generate() asks the model for the last position's only).
    """
    width = 4 if dtype == "fp32" else 2
    tokens = batch * prompt
    parts = {
        "weights": shape.weight_bytes(dtype),
        "kv cache": batch * shape.kv_bytes(prompt + new),
        # The logits and the processed scores of the positions asked for, in fp32.
        "logits": (tokens if scoring else batch) * shape.vocab_size * 4 * 2,
        # One layer at a time during the prefill: its MLP's and mixer's outputs.
        "prefill activations": tokens * width * (4 * shape.hidden_size + 4 * shape.intermediate_size),
    }
    if device == "CPU":
        # The CPU attention's scores and probabilities of one layer (GPU kernels never hold them whole).
        parts["attention scores"] = 2 * batch * shape.attention_heads * prompt**2 * 4
    else:
        parts["cuda"] = GPU_RESERVE
    return parts


def training_need(shape: Shape, training: Training, world: int, device: str) -> dict[str, int]:
    """Bytes per GPU (or per CPU process) of hala's SFT: fp32 master weights, AdamW, activations."""
    shard = world if training.strategy == "fsdp" else 1
    p = shape.parameters
    parts = {
        "weights (fp32)": 4 * p // shard,
        "gradients (fp32)": 4 * p // shard,
        "adamw state": 8 * p // shard,
    }
    if training.strategy == "ddp" and world > 1:
        parts["ddp gradient buckets"] = 4 * p
    if training.strategy == "fsdp" and world > 1:
        # One layer gathered whole while the next is prefetched.
        parts["fsdp gathered layers"] = 2 * 4 * shape.largest_layer_parameters
    tokens = training.batch_size * training.max_length
    on_gpu = device == "GPU"
    # Per token and layer: the mixer's and GLU MLP's inputs and outputs kept for the backward pass, in
    # bf16 under autocast on GPU, fp32 on CPU (where hala trains without autocast or checkpointing).
    # A short-convolution layer keeps its 3x-wide input projection, gates and a transposed copy:
    # about 20 hidden widths against attention's 8 (benchmarks/plan_memory.py measured both).
    width = 2 if on_gpu else 4
    h, i = shape.hidden_size, shape.intermediate_size
    attention_layer, conv_layer = width * (8 * h + 4 * i), width * (20 * h + 4 * i)
    per_layers = conv_layer * shape.conv_layers + attention_layer * (shape.layers - shape.conv_layers)
    if on_gpu and training.gradient_checkpointing:
        parts["activations"] = tokens * (4 * h * shape.layers + max(attention_layer, conv_layer))
    else:
        parts["activations"] = tokens * per_layers
    if not on_gpu:
        # PyTorch's CPU attention (the math path under autograd) keeps each layer's probabilities;
        # on GPU the flash and memory-efficient kernels recompute them.
        attention = shape.full_attention_layers + shape.sliding_attention_layers
        parts["attention probabilities"] = training.batch_size * shape.attention_heads * training.max_length**2 * 4 * attention
    # Logits, their fp32 copy for the loss, log-softmax and its gradient.
    parts["logits and loss"] = tokens * shape.vocab_size * (14 if on_gpu else 12)
    if on_gpu:
        parts["cuda/nccl"] = GPU_RESERVE
    return parts


def _fix_generation(shape: Shape, dtype: str, tp: int, max_len: int, have: int, where: str, engine: str) -> str:
    if engine != "vllm":
        need_tp = next((t for t in (1, 2, 4, 8, 16) if sum(_vllm_need(shape, dtype, t, max_len).values()) <= have), None)
        more = f" with tensor_parallel_size {need_tp}" if need_tp else ""
        return f"transformers puts the whole model on one GPU: run it on vLLM{more} (engine auto in the vllm image)"
    for t in (2, 4, 8, 16):
        if t > tp and sum(_vllm_need(shape, dtype, t, max_len).values()) <= have:
            return f"set {where}.tensor_parallel_size to {t}"
    base = sum(v for k, v in _vllm_need(shape, dtype, tp, max_len).items() if not k.startswith("kv"))
    per_token = shape.kv_bytes(max_len, tp) / max_len
    room = int((have - base) / per_token) if have > base else 0
    if room > 0:
        return f"set {where}.max_model_len to at most {room} (the model's own is {shape.context})"
    return "use GPUs with more memory"


def _fix_training(shape: Shape, training: Training, world: int, have: int, where: str) -> str:
    if training.strategy != "fsdp":
        for n in (2, 4, 8, 16, 32, 64):
            if n >= world and sum(training_need(shape, training.model_copy(update={"strategy": "fsdp"}), n, "GPU").values()) <= have:
                return f"set {where}.strategy to fsdp over at least {n} GPUs"
    for batch in (training.batch_size // 2, training.batch_size // 4, 1):
        if batch >= 1 and sum(training_need(shape, training.model_copy(update={"batch_size": batch}), world, "GPU").values()) <= have:
            return f"set {where}.batch_size to {batch} (and raise gradient_accumulation_steps to keep the global batch)"
    if not training.gradient_checkpointing:
        return f"set {where}.gradient_checkpointing to true"
    return f"lower {where}.max_length or use more GPUs"


class _Planner:
    def __init__(self, recipe: Recipe, local: dict | None, lenient: bool = False):
        self.recipe = recipe
        self.local = local  # {"device": "GPU"|"CPU", "memory": bytes, "gpus": n} when planning for this machine
        self.lenient = lenient
        self.rows: list[Row] = []
        self.sources: dict[str, str] = {}
        self.unsized: dict[str, str] = {}

    def shape(self, ref: str, revision: str | None) -> Shape | None:
        try:
            shape, source = model_shape(ref, revision)
        except PlanError as err:
            if not self.lenient:
                raise
            self.unsized[ref] = str(err)
            return None
        self.sources[ref] = source
        return shape

    def resources(self, role: str) -> tuple[Resources | None, str]:
        cluster = self.recipe.cluster
        return (cluster.resources.get(role) if cluster else None), f"cluster.resources.{role}"

    def gpu_have(self, role: str) -> int | None:
        if self.local is not None:
            return self.local["memory"] if self.local["device"] == "GPU" else None
        resources, where = self.resources(role)
        if resources is None:
            raise PlanError(f"{where} is not set: the plan needs its GPUs' memory (node_selector {GPU_PRODUCT_LABEL} or accelerator_memory)")
        return accelerator_memory(resources, where)

    def pod_have(self, role: str) -> int | None:
        if self.local is not None:
            return self.local["host_memory"]
        resources, where = self.resources(role)
        return quantity_bytes(resources.memory, f"{where}.memory") if resources and resources.memory else None

    def on_gpu(self) -> bool:
        return self.local is None or self.local["device"] == "GPU"

    def engine(self, family: str) -> str:
        choice = self.recipe.engine
        if choice != "auto":
            return choice
        # Only the vllm family's images hold vLLM. A CPU plan sizes the subprocess run, whose environment
        # has none (the CPU vllm image's vLLM keeps its cache in VLLM_CPU_KVCACHE_SPACE instead).
        return "vllm" if family == "vllm" and self.on_gpu() else "transformers"

    def generation(self, stage: str, ref: str, revision: str | None, generation: Generation, where: str, *,
                   family: str, role: str, dtype: str = "bf16", prompt_tokens: int | None = None, label: str | None = None,
                   scoring: bool = False) -> None:  # fmt: skip
        shape = self.shape(ref, revision)
        if shape is None:
            return
        engine = self.engine(family)
        device = "GPU" if self.on_gpu() else "CPU"
        have = self.gpu_have(role) if device == "GPU" else self.pod_have(role)
        if engine == "vllm":
            tp = generation.tensor_parallel_size
            max_len = generation.max_model_len or shape.context
            parts = _vllm_need(shape, dtype, tp, max_len)
            have = int(have * VLLM_MEMORY_UTILIZATION) if have is not None else None
        else:
            tp = 1
            prompt = prompt_tokens or generation.max_new_tokens
            gen_dtype = dtype if device == "GPU" else "fp32"
            parts = _transformers_need(shape, gen_dtype, generation.batch_size, prompt, generation.max_new_tokens, device, scoring=scoring)
        row = Row(stage, label or ref, engine, device, tp, sum(parts.values()), have, parts)
        if not row.fits:
            row.fix = (
                _fix_generation(shape, dtype, tp, generation.max_model_len or shape.context, have, where, engine)
                if device == "GPU" else f"give {self.resources(role)[1]}.memory at least {math.ceil(row.need / GIB)}Gi"
            )  # fmt: skip
        self.rows.append(row)

    def training(self, stage: str, ref: str, revision: str | None, training: Training, where: str) -> None:
        shape = self.shape(ref, revision)
        if shape is None:
            return
        device = "GPU" if self.on_gpu() else "CPU"
        resources, res_where = self.resources("training")
        per_node = training.processes or (resources.gpus if resources and resources.gpus else 0) or (self.local or {}).get("gpus") or 1
        world = 1 if training.strategy == "single" else per_node * training.nodes
        gpu = device == "GPU"
        parts = training_need(shape, training, world, device)
        have = self.gpu_have("training") if gpu else self.pod_have("training")
        row = Row(stage, ref, f"trl {training.strategy}", device, world if gpu else 1, sum(parts.values()), have, parts)
        if not row.fits:
            row.fix = _fix_training(shape, training, world, have, where) if gpu else f"give {res_where}.memory more"
        self.rows.append(row)
        if gpu and self.local is None:
            # Every rank first loads the model on the CPU in fp32, at once, before it moves to its GPU.
            ranks = per_node if training.strategy != "single" else 1
            cpu = {"fp32 copies while loading": ranks * 4 * shape.parameters}
            pod = self.pod_have("training")
            cpu_row = Row(stage + " (pod)", ref, f"trl {training.strategy}", "CPU", 1, sum(cpu.values()), pod, cpu)
            if not cpu_row.fits:
                cpu_row.fix = f"give {res_where}.memory at least {math.ceil(cpu_row.need / GIB)}Gi"
            self.rows.append(cpu_row)

    def quantize(self) -> None:
        teacher = self.recipe.teacher
        shape = self.shape(teacher.model, teacher.revision)
        if shape is None:
            return
        # llm-compressor's model-free path holds one checkpoint shard at a time: the shard as read,
        # its quantized copy and the work tensors, which llm-compressor itself estimates at 2.5 times
        # the shard when it cannot measure them.
        shard, known = largest_shard(teacher.model, teacher.revision, shape)
        parts = {f"largest shard x 2.5 ({'measured' if known else 'assumed 5 GB'})": int(2.5 * shard), "runtime": GPU_RESERVE}
        row = Row("1a. quantize teacher", teacher.model, "llm-compressor", "CPU", 1, sum(parts.values()), self.pod_have("quantize"), parts)
        if not row.fits:
            row.fix = f"give cluster.resources.quantize.memory at least {math.ceil(row.need / GIB)}Gi"
        self.rows.append(row)
        # The gate serves the original, then the FP8 copy, in the vllm image: the original is the larger.
        g = teacher.generation
        self.generation("1b. FP8 gate (original)", teacher.model, teacher.revision, g, "teacher.generation", family="vllm", role="generation")

    def build(self) -> Plan:
        r, reuse = self.recipe, self.recipe.reuse
        if not reuse.fp8_teacher:
            self.quantize()
        if not reuse.bilingual:
            self.generation("2. bootstrap", r.teacher.model, r.teacher.revision, r.bootstrap.generation, "bootstrap.generation",
                            family="vllm", role="generation", dtype="fp8", prompt_tokens=r.bootstrap.source_budget,
                            label=f"{r.teacher.model} (FP8)")  # fmt: skip
        if not reuse.pairs:
            self.generation("3. judge", r.judge.model, r.judge.revision, r.judge.generation, "judge.generation", family="vllm", role="generation")
        if not reuse.translator:
            self.training("4. train translator", r.translator.base, r.translator.revision, r.translator.training, "translator.training")
        self.generation("4. evaluate translator", r.translator.base, r.translator.revision, r.translator.generation,
                        "translator.generation", family="vllm", role="evaluation")  # fmt: skip
        if not reuse.corpus:
            self.generation("5. translate corpus", r.translator.base, r.translator.revision, r.corpus.generation, "corpus.generation",
                            family="vllm", role="generation", prompt_tokens=r.corpus.source_budget)  # fmt: skip
        for student in r.students.models:
            if student.name not in reuse.students:
                self.training(f"6. train {student.name}", student.base, student.revision, r.students.training, "students.training")
            evaluation = Generation(max_new_tokens=1, batch_size=r.evaluation.batch_size, max_model_len=None)
            self.generation(f"8. evaluate {student.name}", student.base, student.revision, evaluation, "evaluation",
                            family="vllm", role="evaluation", prompt_tokens=EVAL_TOKENS, scoring=True)  # fmt: skip
        return Plan(self.rows, {k: v for k, v in self.sources.items() if v}, self.unsized)


def this_machine() -> dict:
    """What a local run has: the first GPU's memory if there is one, else the host's memory."""
    import psutil

    host = psutil.virtual_memory().total
    try:
        import torch

        if torch.cuda.is_available():
            return {"device": "GPU", "memory": torch.cuda.get_device_properties(0).total_memory, "gpus": torch.cuda.device_count(), "host_memory": host}
    except ImportError:
        pass
    return {"device": "CPU", "memory": host, "gpus": 0, "host_memory": host}


def transformers_need(model_path: str, generation: Generation, prompt_tokens: int | None = None, scoring: bool = False) -> int:
    """Bytes on one GPU for ``model_path`` on transformers in bf16, as the plan's transformers rows count them."""
    shape = shape_from_config(json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8")))
    prompt = prompt_tokens or generation.max_new_tokens
    return sum(_transformers_need(shape, "bf16", generation.batch_size, prompt, generation.max_new_tokens, "GPU", scoring=scoring).values())


def check_recipe(recipe: Recipe, lenient: bool = False) -> Plan | None:
    """The plan of a recipe's pods, raising PlanError naming every stage that does not fit; None when
    the recipe sizes no pods (no ``cluster.resources``: a local run, planned for its machine by ``hala plan``).

    ``lenient`` (compile and submit, which may run where the hub or the bucket does not answer):
    a model whose config cannot be read here leaves its stages unsized (``Plan.unsized``) instead
    of failing; the pipeline's preflight sizes them in the cluster.
    """
    if recipe.cluster is None or not recipe.cluster.resources:
        return None
    plan = plan_recipe(recipe, lenient=lenient)
    plan.check()
    return plan


def plan_recipe(recipe: Recipe, local: dict | None = None, lenient: bool = False) -> Plan:
    """The plan of every stage; a recipe without a cluster section is planned for this machine."""
    if recipe.cluster is None and local is None:
        local = this_machine()
    return _Planner(recipe, local, lenient).build()
