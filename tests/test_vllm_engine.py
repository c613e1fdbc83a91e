"""VLLMEngine and pick_backend against a stand-in vllm module: what hala passes vLLM and reads back.

vLLM needs a GPU to generate; these tests replace only the module, with the interface hala uses
(LLM.chat, LLM.generate with prompt_logprobs, SamplingParams, TokensPrompt, the cleanup call).
"""

from __future__ import annotations

import logging
import re
import sys
import types
from dataclasses import dataclass, field

import pytest

from hala import engines
from hala.recipe import Generation


@dataclass
class _Out:
    text: str
    token_ids: list[int]
    finish_reason: str


@dataclass
class _Request:
    outputs: list[_Out]
    prompt_logprobs: list | None = None


@dataclass
class _Logprob:
    logprob: float


@dataclass
class _Calls:
    init: dict = field(default_factory=dict)
    chat: list = field(default_factory=list)
    generate: list = field(default_factory=list)
    cleaned: int = 0


@pytest.fixture
def stand_in_vllm(tiny, monkeypatch):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny("student-s"))
    calls = _Calls()

    class LLM:
        def __init__(self, **kwargs):
            calls.init = kwargs

        def get_tokenizer(self):
            return tokenizer

        def chat(self, conversations, params, use_tqdm=True, chat_template=None):
            calls.chat.append({"conversations": conversations, "params": params, "chat_template": chat_template})
            # Answers in input order; the second stops at max_tokens.
            return [
                _Request([_Out(f" answer {n} ", list(range(n + 1)), "length" if n == 1 else "stop")])
                for n, _ in enumerate(conversations)
            ]

        def generate(self, requests, params, use_tqdm=True):
            calls.generate.append({"requests": requests, "params": params})
            # Each prompt token's log-probability is -(its position + 1) / 10: sums are checkable.
            return [
                _Request([_Out("", [0], "length")], [None] + [{t: _Logprob(-(k + 1) / 10)} for k, t in enumerate(r["prompt_token_ids"][1:], 1)])
                for r in requests
            ]

    def sampling_params(**kwargs):
        return dict(kwargs)

    def cleanup():
        calls.cleaned += 1

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, sampling_params
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = dict
    distributed = types.ModuleType("vllm.distributed")
    state = types.ModuleType("vllm.distributed.parallel_state")
    state.cleanup_dist_env_and_memory = cleanup
    for name, module in {"vllm": vllm, "vllm.inputs": inputs, "vllm.distributed": distributed, "vllm.distributed.parallel_state": state}.items():
        monkeypatch.setitem(sys.modules, name, module)
    return calls, tokenizer


def test_vllm_engine_passes_the_recipe_and_reads_answers_in_order(stand_in_vllm):
    calls, _ = stand_in_vllm
    generation = Generation(max_new_tokens=32, temperature=0.0, tensor_parallel_size=4, max_model_len=8192)
    engine = engines.VLLMEngine("/models/teacher", generation, chat_template="chatml")
    assert calls.init == {"model": "/models/teacher", "tensor_parallel_size": 4, "max_model_len": 8192}
    conversations = [[{"role": "user", "content": f"q{n}"}] for n in range(3)]
    done = engine.complete(conversations, generation)
    assert [c.text for c in done] == ["answer 0", "answer 1", "answer 2"]
    assert [c.truncated for c in done] == [False, True, False]  # finish_reason "length"
    assert [c.tokens for c in done] == [1, 2, 3]
    call = calls.chat[0]
    assert call["params"] == {"temperature": 0.0, "max_tokens": 32}
    assert call["conversations"] == conversations
    assert "<|im_start|>" in call["chat_template"]  # the recipe's named template, as Jinja text
    engine.close()
    assert calls.cleaned == 1 and not hasattr(engine, "llm")


def test_vllm_choice_logprobs_sum_the_choice_tokens_after_the_prompt(stand_in_vllm):
    calls, tokenizer = stand_in_vllm
    engine = engines.VLLMEngine("/models/judge", Generation())
    conversation = [{"role": "user", "content": "Is this a translation?"}]
    scores = engine.choice_logprobs([conversation], ["ACCEPT", "REJECT"])
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    context = len(tokenizer.encode(text, add_special_tokens=False))
    expected = [-sum((context + k + 1) / 10 for k in range(len(tokenizer.encode(c, add_special_tokens=False)))) for c in ("ACCEPT", "REJECT")]
    assert scores == [pytest.approx(expected)]
    assert calls.generate[0]["params"] == {"max_tokens": 1, "prompt_logprobs": 0}
    assert len(calls.generate[0]["requests"]) == 2


def test_pick_backend_takes_vllm_on_a_gpu_and_refuses_transformers_for_a_model_one_gpu_cannot_hold(monkeypatch, caplog, tiny):
    monkeypatch.setattr(engines, "gpu_available", lambda: True)
    monkeypatch.setattr(engines.importlib.util, "find_spec", lambda name: object() if name == "vllm" else None)
    model = str(tiny("teacher"))
    generation = Generation(max_new_tokens=64, batch_size=8)
    assert engines.pick_backend("auto", model, generation) == "vllm"
    assert engines.pick_backend("transformers", model, generation) == "transformers"
    # An image without vLLM on a GPU node (the quantize or train image, a workstation):
    monkeypatch.setattr(engines.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(engines, "gpu_memory", lambda: 80 * 2**30)
    with caplog.at_level(logging.WARNING, logger="hala.engines"):
        assert engines.pick_backend("auto", model, generation) == "transformers"  # a tiny model fits one GPU: said, then taken
    assert f"{model} on transformers fits one GPU" in caplog.text
    monkeypatch.setattr(engines, "gpu_memory", lambda: 2**20)
    with pytest.raises(engines.EngineError) as refused:
        engines.pick_backend("auto", model, generation)
    assert re.fullmatch(
        rf"engine auto: this node has a GPU but this image has no vLLM, and {re.escape(model)} on transformers needs \d+\.\d GiB on one GPU, "
        r"which has 0\.0 GiB; run the stage in the hala-vllm image \(hala plan sizes it for vLLM\), or set engine: transformers to force one GPU",
        str(refused.value),
    ), str(refused.value)
    # Without the model to size, auto does not guess; transformers asked for by name still runs.
    with pytest.raises(engines.EngineError, match="this stage's model on transformers cannot be sized"):
        engines.pick_backend("auto")
    assert engines.pick_backend("transformers") == "transformers"
    monkeypatch.setattr(engines, "gpu_available", lambda: False)
    caplog.clear()
    assert engines.pick_backend("auto") == "transformers" and caplog.text == ""
    with pytest.raises(ValueError, match="unknown generation engine 'tgi'; use auto, transformers or vllm"):
        engines.pick_backend("tgi")
