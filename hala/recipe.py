"""The recipe: one validated document that describes a whole translate-and-tune run.

Every stage reads its own section; defaults live here and nowhere else. Unknown keys
are refused (``extra="forbid"``) so that a typo fails before any stage runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hala.chat_templates import check_chat_template

Layout = Literal["auto", "opus", "columns", "instruction", "sharegpt", "messages"]
# Kinds of pipeline task that ask the cluster for the same kind of pod (pipelines/scheduling.py).
Role = Literal["light", "quantize", "generation", "training", "merge", "evaluation"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


class RecipeError(ValueError):
    """A recipe that cannot run; the message is one line naming the key and the problem."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def classify_ref(ref: str) -> str:
    """Say where a model or dataset reference points: tiny, bundled, s3, local or hub."""
    if ref.startswith("tiny:"):
        return "tiny"
    if ref.startswith("bundled:"):
        return "bundled"
    if ref.startswith("s3://"):
        return "s3"
    if ref.startswith(("/", "./", "../", "~")) or ref.startswith("file:"):
        return "local"
    if _HUB_ID.match(ref):
        return "hub"
    raise ValueError(
        f"{ref!r} is not a hub id (org/name), an s3:// URI, a local path (/... or ./...), "
        "'tiny:NAME' or 'bundled:PATH'"
    )


def _check_ref(value: str) -> str:
    if classify_ref(value) == "s3" and has_credentials(value):
        raise ValueError(
            f"{redacted(value)} must not carry credentials (they would land in the compiled pipeline); "
            "give AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from a Secret in cluster.secrets"
        )
    return value


def has_credentials(url: str | None) -> bool:
    """Whether a URL carries user information (``scheme://user:password@host``)."""
    from urllib.parse import urlsplit

    return bool(url) and "://" in url and "@" in urlsplit(url).netloc


def redacted(url: str) -> str:
    """``url`` with its user information replaced, to name it in an error without repeating a secret."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl() if has_credentials(url) else url


def refuse_credentials(url: str | None, what: str, instead: str) -> None:
    """Raise ValueError for a URL with user:password in it: run parameters, recipes and logs keep URLs; secrets go elsewhere."""
    if has_credentials(url):
        raise ValueError(f"{what} must not carry credentials ({redacted(url)}); give {instead}")


def _without_credentials(url: str | None, instead: str) -> str | None:
    """Refuse a URL with user:password in it: the recipe travels into the compiled pipeline and logs."""
    if has_credentials(url):
        raise ValueError(f"must not carry credentials (they would land in the compiled pipeline); give {instead} from a Secret in cluster.secrets")
    return url


def _check_template(value: str | None) -> str | None:
    return None if value is None else check_chat_template(value)


_CHAT_TEMPLATE_HELP = (
    "chat template to train and generate with, over the tokenizer's own: a name ('chatml') or Jinja text "
    "with {% generation %} markers around the assistant's turn; required when the tokenizer has none"
)


_REVISION_HELP = (
    "version to read: a hub branch, tag or commit sha, or an s3:// object's ETag (the run stops if the object "
    "changed); default: the newest. The run records the commit or ETag it read either way"
)


def _check_revision(ref: str, revision: str | None) -> None:
    if revision is not None and classify_ref(ref) not in ("hub", "s3"):
        raise ValueError(f"revision pins hub and s3:// sources; {ref!r} is {classify_ref(ref)}")


_MODEL_REVISION_HELP = (
    "version of the model: a hub branch, tag or commit sha, or the digest hala recorded for an s3:// folder "
    "(the run stops if it changed); default: the newest. The run records the commit or digest it read either way"
)
_KEEP_RATE_HELP = (
    "the stage stops when under this share of its rows survive: checked on its first (canary) shard before any "
    "fan-out, then on each worker's running count; 0 never stops. Default {default}; it counts {what}"
)


def _pinned(section, field: str):
    try:
        _check_revision(getattr(section, field), section.revision)
    except ValueError as err:
        raise ValueError(f"revision: {err}") from None
    return section


class Sample(Section):
    """A deterministic spread sample: ``limit`` rows of the first ``of``, drawn with ``seed``."""

    of: int = Field(gt=0, description="rows to draw from (after skip): the split's size, as its dataset card gives it")
    seed: int = 0


class DatasetRef(Section):
    """A dataset: a file, a hub id or bundled data, optionally a window of its rows."""

    path: str = Field(description="hub id, s3:// URI, local file, or bundled:RELATIVE_PATH")
    layout: Layout = Field("auto", description="row layout; auto detects it from the first row")
    split: str = Field("train", description="split to read for hub datasets")
    subset: str | None = Field(None, description="hub dataset configuration, e.g. 'ar-en' for opus-100")
    skip: int = Field(0, ge=0, description="rows to skip from the start")
    limit: int | None = Field(None, gt=0, description="at most this many rows after skip")
    max_row_bytes: int = Field(
        1_000_000, gt=0, description="a JSONL row longer than this is rejected unread (megabyte rows are junk or attacks)"
    )
    fields: dict[Literal["system", "user", "assistant"], str] = Field(
        default_factory=dict,
        description="for layout 'columns' holding conversations: which column is the system prompt, user turn, assistant turn",
    )
    other_roles: Literal["reject", "drop", "keep"] = Field(
        "reject",
        description="a turn whose role is not system/user/assistant (tool, function, ...): reject its row, drop the turn, "
        "or keep it untranslated",
    )
    revision: str | None = Field(None, min_length=1, description=_REVISION_HELP)
    sample: Sample | None = Field(
        None,
        description="read `limit` rows spread evenly at random (seeded) over the first `sample.of` rows, not the first "
        "`limit` rows",
    )

    _ref = field_validator("path")(_check_ref)

    @model_validator(mode="after")
    def _revision_and_sample(self) -> DatasetRef:
        _check_revision(self.path, self.revision)
        if self.sample is not None:
            if self.limit is None:
                raise ValueError("sample needs limit: the number of rows to take")
            if self.limit > self.sample.of:
                raise ValueError(f"limit {self.limit} is more than the sample's {self.sample.of} rows")
        return self

    def check_conversational(self, where: str) -> None:
        if self.layout == "opus":
            raise ValueError(f"{where}: layout 'opus' holds parallel pairs, not instructions")
        if self.layout == "columns" and not {"user", "assistant"} <= self.fields.keys():
            raise ValueError(f"{where}: layout 'columns' needs fields.user and fields.assistant (the column names)")

    def check_parallel(self, where: str) -> None:
        if self.layout in ("instruction", "sharegpt", "messages"):
            raise ValueError(f"{where}: layout {self.layout!r} holds conversations, not parallel pairs")


class Generation(Section):
    max_new_tokens: int = Field(256, gt=0)
    temperature: float = Field(0.0, ge=0.0, description="0 means greedy decoding")
    batch_size: int = Field(8, gt=0, description="prompts per batch on the transformers backend")
    tensor_parallel_size: int = Field(1, gt=0, description="GPUs per vLLM engine")
    max_model_len: int | None = Field(
        None, gt=0, description="tokens per sequence (prompt and output) vLLM keeps room for; default: the model's context length"
    )


class Training(Section):
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(2e-5, gt=0)
    batch_size: int = Field(8, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    max_length: int = Field(1024, gt=0, description="tokens per training sequence")
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    seed: int = 0
    save_steps: int = Field(
        0, ge=0, description="write a checkpoint every this many optimizer steps (0: none); a rerun resumes from the last"
    )
    save_total_limit: int = Field(2, gt=0, description="checkpoints kept on disk")
    packing: Literal["auto", "always", "never"] = Field(
        "auto",
        description="pack several conversations into each max_length row, without padding. auto packs where it pays "
        "and is exact: on a GPU with sdpa or flash attention (on a CPU packing is slower than padded batches), and "
        "when a probe shows the model keeps packed sequences apart (LFM2's conv layers do not without their "
        "causal-conv1d kernel)",
    )
    attention: Literal["default", "sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention"] = Field(
        "default", description="attention kernel for training (transformers' attn_implementation); default: sdpa"
    )
    strategy: Literal["single", "ddp", "fsdp"] = Field(
        "single",
        description="single: one process; ddp: one process per GPU, each holding the model; fsdp: one process "
        "per GPU with weights, gradients and optimizer state sharded (for models that do not fit one GPU)",
    )
    processes: int = Field(0, ge=0, description="processes for ddp/fsdp; 0 means one per visible GPU (per node)")
    nodes: int = Field(
        1, ge=1, description="machines for ddp/fsdp; above 1 the stage runs a Kubeflow Trainer TrainJob with this many nodes"
    )
    gradient_checkpointing: bool = Field(True, description="recompute activations on GPU to save memory")

    @model_validator(mode="after")
    def _nodes(self) -> Training:
        if self.nodes > 1 and self.strategy == "single":
            raise ValueError(f"nodes is {self.nodes}: training on several nodes needs strategy ddp or fsdp")
        if self.nodes > 1 and not self.processes:
            # The stage's pod cannot see the training nodes' GPUs, so it cannot count them.
            raise ValueError(f"nodes is {self.nodes}: give training.processes, the processes (GPUs) on each node")
        return self


class Languages(Section):
    source: str = Field("en", min_length=2)
    target: str = Field("ar", min_length=2)
    source_name: str = "English"
    target_name: str = "Arabic"


class Teacher(Section):
    """Stage 1: the translation teacher and its FP8 compression."""

    model: str
    revision: str | None = Field(None, min_length=1, description=_MODEL_REVISION_HELP)
    scheme: Literal["FP8_DYNAMIC"] = "FP8_DYNAMIC"
    ignore: list[str] = Field(default_factory=lambda: ["lm_head"])
    gate_dataset: DatasetRef = Field(description="held-out parallel pairs for the quality gate")
    max_chrf_drop: float = Field(1.0, ge=0, description="largest chrF loss (points) the FP8 copy may show")
    generation: Generation = Generation()

    _ref = field_validator("model")(_check_ref)
    _revision_check = model_validator(mode="after")(lambda self: _pinned(self, "model"))


class Sharding(Section):
    """How a data stage cuts its work: the unit of progress, of resume after a crash, and of fan-out."""

    size: int = Field(256, gt=0, description="rows per shard")
    workers: int = Field(1, gt=0, description="parallel workers (pipeline tasks) that share the shards")
    cache: str | None = Field(
        None,
        description="folder that keeps finished shards across runs (a shared volume on a cluster); "
        "default: inside the stage's output",
    )


class TranslationJob(Section):
    """What the translation stages share: generation, sharding and the faithfulness policy."""

    generation: Generation = Generation()
    shards: Sharding = Sharding()
    system_prompt: Literal["translate", "keep", "drop"] = Field(
        "translate", description="system turns: translate them like the others, keep them as they are, or drop them"
    )
    max_source_tokens: int | None = Field(
        None, gt=0, description="longest piece sent to the model at once; default: two thirds of max_new_tokens"
    )
    max_turn_chars: int = Field(100_000, gt=0, description="a longer turn is rejected, not translated")
    min_keep_rate: float = Field(
        0.5, ge=0, le=1, description=_KEEP_RATE_HELP.format(what="conversations translated whole", default="0.5")
    )

    @property
    def source_budget(self) -> int:
        return self.max_source_tokens or max(8, self.generation.max_new_tokens * 2 // 3)


class Bootstrap(TranslationJob):
    """Stage 2: the FP8 teacher turns English instruction data into bilingual conversations."""

    dataset: DatasetRef
    prompt: str = "Translate from English to Arabic: {text}"
    # The report bootstraps from question + response pairs; system prompts would add near-duplicate training pairs.
    system_prompt: Literal["translate", "keep", "drop"] = Field(
        "drop",
        description="system turns: drop them (default: the translator trains on question and response pairs, as in the "
        "report), translate them too (they become translator training pairs), or keep them as they are",
    )

    @field_validator("prompt")
    @classmethod
    def _has_slot(cls, v: str) -> str:
        if "{text}" not in v:
            raise ValueError("must contain the placeholder {text}")
        return v

    @model_validator(mode="after")
    def _conversational(self) -> Bootstrap:
        self.dataset.check_conversational("dataset")
        return self


class Filters(Section):
    """Heuristic checks every parallel pair passes before the judge sees it."""

    max_chars: int = Field(4000, gt=0, description="longest side allowed, in characters")
    min_length_ratio: float = Field(0.3, gt=0, description="target/source length ratio, lower bound")
    max_length_ratio: float = Field(3.0, gt=0, description="target/source length ratio, upper bound")
    langid_min_chars: int = Field(20, ge=0, description="texts shorter than this skip language identification")
    langid_min_confidence: float = Field(
        0.5, ge=0, le=1, description="a wrong language is a reject only when py3langid is at least this sure"
    )
    target_lang_aliases: list[str] = Field(
        default_factory=lambda: ["arz", "ary", "apc", "acm", "ajp"],
        description="language codes also accepted for the target (e.g. Arabic varieties)",
    )
    near_duplicates: bool = Field(True, description="drop near-duplicates (MinHash LSH) as well as exact ones")
    near_duplicate_threshold: float = Field(0.85, gt=0, le=1, description="Jaccard similarity that counts as a near-duplicate")
    minhash_permutations: int = Field(64, ge=16)

    @model_validator(mode="after")
    def _ratio_order(self) -> Filters:
        if self.min_length_ratio >= self.max_length_ratio:
            raise ValueError("min_length_ratio must be below max_length_ratio")
        return self


class Judge(Section):
    """Stage 3: an instruct model judges candidate parallel pairs ACCEPT/REJECT."""

    model: str
    revision: str | None = Field(None, min_length=1, description=_MODEL_REVISION_HELP)
    dataset: DatasetRef
    filters: Filters = Filters()
    prompt: str = (
        "Is the Arabic text a faithful translation of the English text? "
        "Answer ACCEPT or REJECT.\nEnglish: {source}\nArabic: {target}"
    )
    decision: Literal["probability", "generate"] = Field(
        "probability",
        description="probability: compare the model's own probabilities of answering ACCEPT and REJECT (no text to parse); "
        "generate: generate an answer and look for exactly one of the words in it",
    )
    threshold: float = Field(0.5, gt=0, lt=1, description="with decision probability: accept when P(ACCEPT) is at least this")
    generation: Generation = Generation(max_new_tokens=8)
    shards: Sharding = Sharding()
    min_keep_rate: float = Field(
        0.1, ge=0, le=1, description=_KEEP_RATE_HELP.format(what="pairs the judge accepts", default="0.1")
    )

    _ref = field_validator("model")(_check_ref)
    _revision_check = model_validator(mode="after")(lambda self: _pinned(self, "model"))

    @field_validator("prompt")
    @classmethod
    def _has_slots(cls, v: str) -> str:
        for slot in ("{source}", "{target}"):
            if slot not in v:
                raise ValueError(f"must contain the placeholder {slot}")
        return v

    @model_validator(mode="after")
    def _parallel(self) -> Judge:
        self.dataset.check_parallel("dataset")
        return self


class Translator(Section):
    """Stage 4: SFT of the lightweight translator on bootstrap + filtered pairs."""

    base: str
    revision: str | None = Field(None, min_length=1, description=_MODEL_REVISION_HELP)
    chat_template: str | None = Field(None, description=_CHAT_TEMPLATE_HELP)
    training: Training = Training()
    eval_dataset: DatasetRef = Field(description="held-out pairs the training never sees")
    generation: Generation = Generation()

    _ref = field_validator("base")(_check_ref)
    _template = field_validator("chat_template")(_check_template)
    _revision_check = model_validator(mode="after")(lambda self: _pinned(self, "base"))


class Corpus(TranslationJob):
    """Stage 5: the translator turns English instruction sets into an Arabic corpus (prompt: bootstrap.prompt)."""

    datasets: list[DatasetRef] = Field(min_length=1)

    @model_validator(mode="after")
    def _conversational(self) -> Corpus:
        for i, ds in enumerate(self.datasets):
            ds.check_conversational(f"datasets[{i}]")
        return self


class Student(Section):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]*$", description="short name used in run and model names")
    base: str
    revision: str | None = Field(None, min_length=1, description=_MODEL_REVISION_HELP)
    chat_template: str | None = Field(None, description=_CHAT_TEMPLATE_HELP)

    _ref = field_validator("base")(_check_ref)
    _template = field_validator("chat_template")(_check_template)
    _revision_check = model_validator(mode="after")(lambda self: _pinned(self, "base"))


class Students(Section):
    """Stage 6: SFT of each student on the Arabic corpus."""

    models: list[Student] = Field(min_length=1)
    training: Training = Training()
    parallelism: int = Field(0, ge=0, description="students trained at once; 0 means all of them")

    @model_validator(mode="after")
    def _unique_names(self) -> Students:
        names = [s.name for s in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"student names must be unique; repeated: {', '.join(dupes)}")
        return self


class Merge(Section):
    """Stage 7: slerp of each fine-tuned student with its base (mergekit)."""

    method: Literal["slerp"] = "slerp"
    t: float | list[float] = Field(
        0.5,
        description="0 keeps the base, 1 keeps the fine-tuned model; a list sweeps: each t is merged and "
        "evaluated, and the best evaluation average wins",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"

    @field_validator("t")
    @classmethod
    def _t_values(cls, v: float | list[float]) -> float | list[float]:
        values = v if isinstance(v, list) else [v]
        if not values:
            raise ValueError("give at least one t")
        if any(not 0.0 <= t <= 1.0 for t in values):
            raise ValueError(f"every t must be between 0 and 1, got {values}")
        if len({round(t, 2) for t in values}) != len(values):
            raise ValueError(f"t values must differ at two decimals, got {values}")
        return v

    @property
    def candidates(self) -> list[float]:
        return list(self.t) if isinstance(self.t, list) else [self.t]


class Evaluation(Section):
    """Stage 8: the OALL v2 suite (hala.benchmarks; zero-shot, acc_norm, 0-100), and chrF/BLEU for the translator."""

    benchmarks: list[str] = Field(
        default_factory=lambda: ["alghafa", "arabic_mmlu", "exams", "madinah_qa", "aratrust", "arbmmlu_ht"],
        min_length=1,
        description="tasks (all their subsets) or task:subset names; `hala benchmarks` lists them",
    )
    source: Literal["hub", "fixtures"] = Field("hub", description="real datasets, or the bundled fixtures offline")
    limit: int | None = Field(None, gt=0, description="at most this many documents per subset (not comparable then)")
    batch_size: int = Field(8, gt=0)

    @field_validator("benchmarks")
    @classmethod
    def _known_benchmarks(cls, value: list[str]) -> list[str]:
        from hala.benchmarks import parse_selection

        parse_selection(value)
        return value


class Promotion(Section):
    """When a registered challenger may become champion (``hala promote``)."""

    margin: float = Field(0.0, ge=0, description="points of the six-task average (0-100) to beat the champion and the base by")
    floors: dict[str, float] = Field(
        default_factory=dict, description="lowest acceptable task score (0-100), e.g. {aratrust: 60}"
    )

    @field_validator("floors")
    @classmethod
    def _known_tasks(cls, value: dict[str, float]) -> dict[str, float]:
        from hala.benchmarks import TASKS

        unknown = sorted(set(value) - set(TASKS))
        if unknown:
            raise ValueError(f"floors for unknown task(s) {', '.join(unknown)}; the tasks are: {', '.join(TASKS)}")
        return value


class Tracking(Section):
    """Stage 9: MLflow tracking and model registry."""

    tracking_uri: str | None = Field(None, description="MLflow URI; None means a local store in the run folder")
    experiment: str = "hala"
    registry_prefix: str = Field("hala", pattern=r"^[A-Za-z0-9][\w\-]*$")

    @field_validator("tracking_uri")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        return _without_credentials(value, "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD")


class Storage(Section):
    """Where a run keeps what must outlive a pod: training checkpoints (and, on a cluster, KFP's artifacts).

    The endpoint and keys are not here: pods read AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY from the environment (hala.storage).
    """

    uri: str = Field(pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$", description="s3://bucket/prefix")

    def run_uri(self, run_id: str, *parts: str) -> str:
        """A run's place under ``uri``: s3://bucket/prefix/<run id>/<parts>."""
        return "/".join([self.uri.rstrip("/"), run_id, *parts])


_ARTIFACT_URI = re.compile(r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/.+|/.+)$")


def _check_artifact_uri(value: str | None) -> str | None:
    if value is not None and not _ARTIFACT_URI.match(value):
        raise ValueError(f"{value!r} is not an s3://bucket/key URI or an absolute path")
    return value


class Reuse(Section):
    """Stage outputs taken from earlier runs: each given one skips its stage (KFP imports the URI instead).

    Paste an artifact's URI from an earlier run (the Kubeflow UI, or a summary.json): for example
    ``fp8_teacher`` starts from an FP8 teacher that is already quantized and checked.
    """

    fp8_teacher: str | None = Field(None, description="skip 1. quantize teacher: the FP8 teacher folder")
    bilingual: str | None = Field(None, description="skip 2. bootstrap: a folder with bilingual.jsonl")
    pairs: str | None = Field(None, description="skip 3. filter: a folder with pairs.jsonl")
    translator: str | None = Field(None, description="skip 4. train translator: the translator model folder")
    corpus: str | None = Field(None, description="skip 5. translate corpus: a folder with corpus.jsonl")
    students: dict[str, str] = Field(
        default_factory=dict, description="skip 6. train student: student name -> SFT checkpoint folder (all students or none)"
    )

    _uris = field_validator("fp8_teacher", "bilingual", "pairs", "translator", "corpus")(_check_artifact_uri)

    @field_validator("students")
    @classmethod
    def _student_uris(cls, value: dict[str, str]) -> dict[str, str]:
        for name, uri in value.items():
            try:
                _check_artifact_uri(uri)
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
        return value

    def stages(self) -> dict[str, str]:
        """The skipped stages' outputs that are given, by output name."""
        given = {k: getattr(self, k) for k in ("fp8_teacher", "bilingual", "pairs", "translator", "corpus")}
        return {k: v for k, v in given.items() if v}


class Toleration(Section):
    key: str
    operator: Literal["Equal", "Exists"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"


class Resources(Section):
    """What the pods of one kind of task ask the cluster for."""

    accelerator: str = Field("nvidia.com/gpu", description="accelerator resource name")
    accelerator_memory: str | None = Field(
        None,
        pattern=r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|K|M|G|T)?$",
        description="memory of one accelerator, e.g. 80Gi; needed by the capacity plan when the node_selector names no GPU it knows",
    )
    gpus: int | None = Field(
        None, ge=0, description="accelerators per pod; None derives it from the stage (tensor_parallel_size, training.processes)"
    )
    cpu: str | None = Field(None, description="CPU request, e.g. '8'")
    memory: str | None = Field(None, description="memory request and limit, e.g. '64Gi'")
    shm: str | None = Field(None, description="size of a memory-backed /dev/shm (NCCL and dataloaders need one with several GPUs)")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)


class SecretRef(Section):
    """A Kubernetes Secret whose keys become environment variables of every task: by name only, never values."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    env: dict[str, str] = Field(min_length=1, description="environment variable -> key in the Secret")


class Retries(Section):
    count: int = Field(2, ge=0)
    backoff: str = Field("60s", pattern=r"^\d+s$")
    factor: float = Field(2.0, ge=1)
    max_duration: str = Field("3600s", pattern=r"^\d+s$")


class TrainJobSettings(Section):
    """Multi-node training (``training.nodes`` > 1) as Kubeflow Trainer TrainJobs."""

    runtime: str = Field("torch-distributed", min_length=1, description="ClusterTrainingRuntime the TrainJobs use")
    namespace: str | None = Field(None, description="namespace of the TrainJobs; default: the pipeline pod's own")
    poll_seconds: float = Field(15.0, gt=0, description="how often the stage checks its TrainJob")


class Cluster(Section):
    """How the pipeline's pods run on Kubernetes (kfp-kubernetes); absent for local runs."""

    s3_endpoint: str | None = Field(
        None, pattern=r"^https?://", description="AWS_ENDPOINT_URL given to every task, e.g. http://minio-service.kubeflow:9000"
    )
    secrets: list[SecretRef] = Field(default_factory=list)
    model_cache: str | None = Field(None, description="PVC mounted at /models as the Hugging Face cache")
    caching: bool = Field(True, description="let KFP reuse results of deterministic stages")
    retries: Retries = Field(Retries(), description="for generation, training, quantization and evaluation pods")
    resources: dict[Role, Resources] = Field(default_factory=dict)
    trainjob: TrainJobSettings = Field(default_factory=TrainJobSettings)

    @field_validator("s3_endpoint")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        return _without_credentials(value, "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")


class Recipe(Section):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]*$")
    description: str = ""
    languages: Languages = Languages()
    engine: Literal["auto", "transformers", "vllm"] = Field(
        "auto", description="generation backend; auto picks vLLM wherever the image has it (GPU or CPU build), else transformers"
    )
    teacher: Teacher
    bootstrap: Bootstrap
    judge: Judge
    translator: Translator
    corpus: Corpus
    students: Students
    merge: Merge = Merge()
    evaluation: Evaluation = Evaluation()
    tracking: Tracking = Tracking()
    storage: Storage | None = Field(None, description="S3 storage for checkpoints; None keeps them on the pod's disk")
    cluster: Cluster | None = Field(None, description="Kubernetes settings of the pipeline's pods; None for local runs")
    promotion: Promotion = Promotion()
    reuse: Reuse = Field(default_factory=Reuse, description="outputs of earlier runs that replace stages")

    @model_validator(mode="after")
    def _multi_node(self) -> Recipe:
        for key, training in (("translator.training", self.translator.training), ("students.training", self.students.training)):
            if training.nodes > 1 and not (self.cluster and self.storage):
                raise ValueError(
                    f"{key}.nodes is {training.nodes}: it runs as a Kubeflow TrainJob, which needs the recipe's cluster "
                    "and storage sections (the nodes share data and the model through S3)"
                )
        return self

    @model_validator(mode="after")
    def _reused_students(self) -> Recipe:
        given = set(self.reuse.students)
        if not given:
            return self
        names = [s.name for s in self.students.models]
        unknown = sorted(given - set(names))
        if unknown:
            raise ValueError(f"reuse.students names {', '.join(unknown)}, which are not in students.models ({', '.join(names)})")
        missing = [n for n in names if n not in given]
        if missing:
            # One loop runs all students the same way; a mix would need two loops and two registries of results.
            raise ValueError(f"reuse.students must give a checkpoint for every student or none; missing: {', '.join(missing)}")
        return self

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    @property
    def hash(self) -> str:
        """Content hash of the validated recipe (defaults included), for lineage tags."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


def builtin_recipes() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in resources.files("hala.recipes").iterdir() if p.name.endswith(".yaml"))


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required key is missing"
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"recipe {source}: {loc}: {msg}{tail}"


def parse_recipe(data: object, source: str = "<dict>") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(_format_error(err, source)) from None


def load_recipe(name_or_path: str) -> Recipe:
    """Load a built-in recipe by name (``smoke``) or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise RecipeError(f"recipe file {name_or_path} does not exist")
        text = path.read_text(encoding="utf-8")
        source = str(path)
    else:
        if name_or_path not in builtin_recipes():
            raise RecipeError(
                f"unknown recipe {name_or_path!r}; built-in recipes: {', '.join(builtin_recipes())} (or give a .yaml path)"
            )
        text = resources.files("hala.recipes").joinpath(f"{name_or_path}.yaml").read_text(encoding="utf-8")
        source = name_or_path
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RecipeError(f"recipe {source}:{where}: not valid YAML") from None
    return parse_recipe(data, source)


def recipe_from_json(text: str) -> Recipe:
    """The inverse of :meth:`Recipe.to_json`, used by components that receive the recipe as a parameter."""
    return parse_recipe(json.loads(text), "<pipeline parameter>")
