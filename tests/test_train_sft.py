"""The SFT stage's packing, chat templates and launcher, on tiny models."""

import json
import shutil

import pytest
import torch

from hala.chat_templates import CHATML
from hala.launch import LaunchError, run_sft
from hala.recipe import RecipeError, Training, load_recipe, parse_recipe
from hala.stages.train_sft import PACKING_LEAK_TOLERANCE, packing_leak, train_sft
from tests.test_stages import CONVERSATIONS
from tests.trained import assert_trained

TRAINING = dict(epochs=2, learning_rate=1e-2, batch_size=4, max_length=96)


@pytest.fixture(scope="module")
def attention_only(tiny, tmp_path_factory):
    """A tiny Llama (attention layers only) on the smoke tokenizer: packing keeps its sequences apart."""
    from hala.tiny import build_attention_only

    return build_attention_only(tmp_path_factory.mktemp("llama"))


def test_packing_probe_tells_attention_from_unmasked_convolution(tiny, attention_only):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def leak(path):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        return packing_leak(model, AutoTokenizer.from_pretrained(path).pad_token_id)

    assert leak(attention_only) == 0.0
    # LFM2's short convolutions reach two tokens back across the boundary without the kernel's seq_idx.
    assert leak(tiny("student-s")) > 100 * PACKING_LEAK_TOLERANCE


def test_packed_training_fills_rows_and_learns(attention_only, tmp_path):
    packed = train_sft(attention_only, CONVERSATIONS, Training(**TRAINING, packing="always"), tmp_path / "packed")
    padded = train_sft(attention_only, CONVERSATIONS, Training(**TRAINING, packing="never"), tmp_path / "padded")
    assert packed["packed"] == 1.0 and padded["packed"] == 0.0
    # 12 short conversations fit a few 96-token rows; unpacked, each is its own row.
    assert packed["train_rows"] < 12 == padded["train_rows"]
    assert packed["train_steps"] < padded["train_steps"]
    assert packed["train_tokens"] == padded["train_tokens"]
    assert packed["packing_leak"] < PACKING_LEAK_TOLERANCE


def test_packing_auto_falls_back_for_a_model_that_mixes_sequences(tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hala.stages.train_sft import decide_packing

    path = tiny("student-s")
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa")
    packing, leak = decide_packing(model, AutoTokenizer.from_pretrained(path), Training(), on_gpu=True)
    assert packing is False and leak > PACKING_LEAK_TOLERANCE
    forced = train_sft(tiny("student-s"), CONVERSATIONS, Training(**TRAINING, packing="always"), tmp_path / "forced")
    assert forced["packed"] == 1.0 and forced["train_rows"] < 12


@pytest.fixture
def no_template(tiny, tmp_path):
    from transformers import AutoTokenizer

    folder = tmp_path / "base-without-template"
    shutil.copytree(tiny("student-s"), folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert not tokenizer.chat_template
    return str(folder)


def test_a_tokenizer_without_template_needs_one_from_the_recipe(no_template, tmp_path):
    from transformers import AutoTokenizer

    with pytest.raises(ValueError, match="has no chat template; set chat_template in its recipe section"):
        train_sft(no_template, CONVERSATIONS, Training(**TRAINING), tmp_path / "refused")
    metrics = train_sft(no_template, CONVERSATIONS, Training(**TRAINING), tmp_path / "ok", chat_template="chatml")
    assert metrics["train_steps"] > 0
    # The trained model carries the template it learned, so generation and serving use it.
    assert AutoTokenizer.from_pretrained(tmp_path / "ok").chat_template == CHATML


def test_a_template_trl_cannot_mark_trains_on_the_assistant_tokens_found_by_rendering(no_template, tmp_path):
    """A template without markers that TRL has no training variant of (hala refused such models before):
    the labels of the first batch hold exactly the assistant turns and their end-of-turn markers."""
    from transformers import AutoTokenizer, TrainerCallback

    from tests.test_assistant_masks import OWN_TEMPLATE

    seen = []

    class FirstBatch(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            seen.append(next(iter(train_dataloader)))

    tokenizer = AutoTokenizer.from_pretrained(no_template)
    metrics = train_sft(no_template, CONVERSATIONS[:4], Training(**TRAINING, packing="never"), tmp_path / "own",
                        chat_template=OWN_TEMPLATE, callbacks=[FirstBatch()])  # fmt: skip
    assert metrics["train_steps"] > 0
    batch = seen[0]
    learned = [tokenizer.decode([t for t, label in zip(ids, labels) if label != -100]) for ids, labels in
               zip(batch["input_ids"].tolist(), batch["labels"].tolist())]  # fmt: skip
    answers = {" ".join(m["content"].split()) for c in CONVERSATIONS[:4] for m in c if m["role"] == "assistant"}
    for text in learned:
        # Only the answer and its end-of-turn marker: no system, user or "[BOT]" prompt token.
        assert text.endswith(f"{tokenizer.eos_token}\n") and "[USER]" not in text and "[BOT]" not in text
        assert " ".join(text.removesuffix(f"{tokenizer.eos_token}\n").split()) in answers
    assert AutoTokenizer.from_pretrained(tmp_path / "own").chat_template == OWN_TEMPLATE


def test_recipe_chat_template_must_be_a_name_or_jinja():
    recipe = load_recipe("smoke").model_dump()
    recipe["students"]["models"][0]["chat_template"] = "llama-ish"
    with pytest.raises(RecipeError, match="chat_template 'llama-ish' is neither a known name"):
        parse_recipe(recipe, "test")


def test_ddp_runs_the_same_stage_on_two_processes_and_logs_its_loss(tiny, tmp_path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run() as run:
        metrics = run_sft(
            tiny("student-s"), CONVERSATIONS, Training(**TRAINING, strategy="ddp", processes=2), tmp_path / "out", metric_prefix="s_"
        )
    assert metrics["processes"] == 2.0
    # Two ranks of 4 rows: 12 rows per epoch take 2 steps, where one process takes 3.
    assert metrics["train_steps"] == 4.0
    losses = mlflow.MlflowClient().get_metric_history(run.info.run_id, "s_loss")
    assert len(losses) >= 2 and losses[-1].value < losses[0].value
    assert_trained(tmp_path / "out", tiny("student-s"))
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_fsdp_without_a_gpu_is_refused_in_one_line(tiny, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the gpu test covers FSDP")
    with pytest.raises(LaunchError, match="strategy fsdp shards the model across GPUs and this machine has none"):
        run_sft(tiny("student-s"), CONVERSATIONS, Training(strategy="fsdp"), tmp_path)


@pytest.mark.gpu
def test_fsdp_on_the_gpus_trains_and_saves_a_whole_model(tiny, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    ranks = min(2, torch.cuda.device_count())  # two ranks shard the model for real where there are two GPUs
    metrics = run_sft(tiny("student-s"), CONVERSATIONS, Training(**TRAINING, strategy="fsdp", processes=ranks), tmp_path / "out")
    assert metrics["processes"] == float(ranks) and metrics["fsdp"] == 1.0
    # Whole, not sharded: the saved model is the base's architecture with trained weights.
    assert_trained(tmp_path / "out", tiny("student-s"))
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "lfm2"


def test_packing_auto_packs_only_where_it_pays(attention_only, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hala.stages.train_sft import decide_packing

    tokenizer = AutoTokenizer.from_pretrained(attention_only)
    sdpa = AutoModelForCausalLM.from_pretrained(attention_only, attn_implementation="sdpa")
    assert decide_packing(sdpa, tokenizer, Training(), on_gpu=False) == (False, None)
    assert decide_packing(sdpa, tokenizer, Training(), on_gpu=True) == (True, 0.0)
    assert decide_packing(sdpa, tokenizer, Training(packing="always"), on_gpu=False) == (True, 0.0)
    assert decide_packing(sdpa, tokenizer, Training(packing="never"), on_gpu=True) == (False, None)
    eager = AutoModelForCausalLM.from_pretrained(attention_only, attn_implementation="eager")
    assert decide_packing(eager, tokenizer, Training(), on_gpu=True) == (False, None)


def test_the_loss_is_on_assistant_tokens_only_in_a_multi_turn_conversation_with_a_system_turn(tiny, tmp_path):
    """The README's claim, on the tiny models' own ChatML template: every label outside the two
    assistant answers (and their end-of-turn markers) is -100."""
    from transformers import AutoTokenizer, TrainerCallback

    conversation = [
        {"role": "system", "content": "Answer in Arabic, briefly."},
        {"role": "user", "content": "Translate: Good morning."},
        {"role": "assistant", "content": "صباح الخير."},
        {"role": "user", "content": "Translate: Thank you."},
        {"role": "assistant", "content": "شكرا لك."},
    ]
    seen = []

    class FirstBatch(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            seen.append(next(iter(train_dataloader)))

    base = tiny("student-s")
    tokenizer = AutoTokenizer.from_pretrained(base)
    train_sft(base, [conversation] * 4, Training(**TRAINING, packing="never"), tmp_path / "out", callbacks=[FirstBatch()])
    for ids, labels in zip(seen[0]["input_ids"].tolist(), seen[0]["labels"].tolist()):
        runs, current = [], []
        for token, label in zip(ids, labels):
            if label != -100:
                assert label == token  # a label is the token itself, shifted by the model
                current.append(token)
            elif current:
                runs.append(current)
                current = []
        runs += [current] if current else []
        texts = [tokenizer.decode(run) for run in runs]
        # Two labelled runs, each an answer closed by the end-of-turn token; nothing of the system or user turns.
        assert [t.removesuffix("\n").removesuffix(tokenizer.eos_token) for t in texts] == ["صباح الخير.", "شكرا لك."], texts
        prompt_tokens = [t for t, label in zip(ids, labels) if label == -100 and t != tokenizer.pad_token_id]
        assert "Answer in Arabic" in tokenizer.decode(prompt_tokens) and "Translate: Thank you." in tokenizer.decode(prompt_tokens)
