"""Every dataset the shipped recipes name, read with the recipe's own entry, from rows shaped as its card shows.

Each entry below gives a few hand-written rows in the dataset's real layout (field names, nesting,
role names) and the card or source the layout was read from. The test points the recipe's entry
at those rows (keeping its layout, fields and role policy) and checks that every row is read and
every turn accounted for: kept, or dropped by the stated policy (an empty system prompt).
"""

from __future__ import annotations

import json

import pytest

from hala.corpora import BadRow, detect_layout, iter_conversations, iter_pairs
from hala.recipe import load_recipe

SHAPES = {
    # huggingface.co/datasets/Open-Orca/OpenOrca README, "Data Fields": id, system_prompt, question, response (strings).
    "Open-Orca/OpenOrca": [
        {"id": "flan.1", "system_prompt": "You are an AI assistant. Answer briefly.", "question": "What is 2+2?", "response": "4."},
        # An empty system prompt (not confirmed on the card; OpenOrca's GPT-4 part often has short ones): dropped.
        {"id": "cot.2", "system_prompt": "", "question": "Is the sky blue? Think step by step.", "response": "Yes, by day."},
    ],
    # NousResearch/Hermes-3-Dataset: ShareGPT `conversations` of {from, value}, from in system/human/gpt
    # (the dataset is gated; the layout is the one its loaders read, huggingface.co/datasets/NousResearch/Hermes-3-Dataset).
    "NousResearch/Hermes-3-Dataset": [
        {"conversations": [{"from": "system", "value": "You are Hermes."}, {"from": "human", "value": "Hi!"}, {"from": "gpt", "value": "Hello."}]},
        {"conversations": [{"from": "system", "value": ""}, {"from": "human", "value": "Name a prime."}, {"from": "gpt", "value": "7."},
                           {"from": "human", "value": "Another?"}, {"from": "gpt", "value": "11."}]},
    ],
    # huggingface.co/datasets/EricLu/SCP-116K README, "Dataset Structure": domain, problem, matched_solution,
    # o1_solution, qwq_solution, is_o1_solution_same_with_matched_solution, is_qwq_solution_same_with_matched_solution.
    "EricLu/SCP-116K": [
        {"domain": "physics", "problem": "A ball falls for 2 s from rest. How far?", "matched_solution": "s = g t^2 / 2 = 19.6 m.",
         "o1_solution": "19.6 m", "qwq_solution": "19.6 m", "is_o1_solution_same_with_matched_solution": True,
         "is_qwq_solution_same_with_matched_solution": True},
    ],
    # github.com/GAIR-NLP/ReAlign README and code (huggingface.co/datasets/GAIR/ReAlign-Alpaca, realign_alpaca.json):
    # {"id", "items": [{"from": "human", "value", "category"}, {"from": "gpt", "value"}], "tag": "rewrite"|"original"}.
    "GAIR/ReAlign-Alpaca": [
        {"id": 0, "items": [{"from": "human", "value": "Give three tips for staying healthy.", "category": "advice_giving"},
                            {"from": "gpt", "value": "Eat well, move daily, sleep enough."}], "tag": "rewrite"},
        {"id": 1, "items": [{"from": "human", "value": "What is 5 times 6?", "category": "default"},
                            {"from": "gpt", "value": "30."}], "tag": "original"},
    ],
    # huggingface.co/datasets/MBZUAI/LaMini-instruction README: instruction, response, instruction_source.
    "MBZUAI/LaMini-instruction": [
        {"instruction": "Write a haiku about rain.", "response": "Soft rain on the roof...", "instruction_source": "self_instruct_without_topic"},
    ],
    # huggingface.co/datasets/allenai/tulu-3-sft-mixture README (dataset_info): id, messages [{content, role}], source.
    "allenai/tulu-3-sft-mixture": [
        {"id": "oasst1_1", "messages": [{"content": "How do magnets work?", "role": "user"}, {"content": "Moving charges...", "role": "assistant"}],
         "source": "ai2-adapt-dev/oasst1_converted"},
        {"id": "hard_coded_2", "messages": [{"content": "", "role": "system"}, {"content": "Who are you?", "role": "user"},
                                            {"content": "I am Tulu.", "role": "assistant"}], "source": "ai2-adapt-dev/tulu_hard_coded_repeated_10"},
    ],
    # huggingface.co/datasets/Dahoas/synthetic-instruct-gptj-pairwise dataset_infos.json: prompt, chosen, rejected.
    "Dahoas/synthetic-instruct-gptj-pairwise": [
        {"prompt": "How do I boil an egg?", "chosen": "Boil water, add the egg, wait 9 minutes.", "rejected": "Eggs are white."},
    ],
    # huggingface.co/datasets/Helsinki-NLP/opus-100 config ar-en: feature `translation` with languages [ar, en].
    "Helsinki-NLP/opus-100": [
        {"translation": {"ar": "شكرا لك.", "en": "Thank you."}},
        {"translation": {"ar": "أين المحطة؟", "en": "Where is the station?"}},
    ],
}  # fmt: skip


def _entries():
    seen = set()
    for name in ("hala-nano", "hala-9b"):
        recipe = load_recipe(name)
        conversational = [("bootstrap.dataset", recipe.bootstrap.dataset)]
        conversational += [(f"corpus.datasets[{i}]", ds) for i, ds in enumerate(recipe.corpus.datasets)]
        parallel = [("teacher.gate_dataset", recipe.teacher.gate_dataset), ("judge.dataset", recipe.judge.dataset),
                    ("translator.eval_dataset", recipe.translator.eval_dataset)]  # fmt: skip
        for kind, entries in (("conversations", conversational), ("pairs", parallel)):
            for where, ds in entries:
                key = (kind, ds.model_dump_json())
                if key not in seen:
                    seen.add(key)
                    yield pytest.param(kind, ds, id=f"{name}:{where}:{ds.path}")


def _expected_turns(row: dict) -> int:
    """Turns a row holds, less empty system prompts (dropped by the one policy)."""
    for key in ("conversations", "items", "messages"):
        if isinstance(row.get(key), list):
            turns = [(t.get("from", t.get("role")), t.get("value", t.get("content"))) for t in row[key]]
            return sum(1 for role, text in turns if not (role == "system" and not text.strip()))
    system = row.get("system_prompt")
    return 2 + (1 if isinstance(system, str) and system.strip() else 0)


def test_every_named_dataset_has_a_shape():
    named = {p.values[1].path for p in _entries()}
    assert named == set(SHAPES), named ^ set(SHAPES)


@pytest.mark.parametrize("kind, ds", list(_entries()))
def test_the_recipe_entry_reads_every_row_and_turn(kind, ds, tmp_path):
    rows = SHAPES[ds.path]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    # the recipe's entry on a local copy: every row read (its window and sample are about the real split's size)
    local = ds.model_copy(update={"path": str(path), "subset": None, "skip": 0, "limit": None, "sample": None})
    if kind == "pairs":
        read = list(iter_pairs(local, "en", "ar"))
        assert [(p.source, p.target) for p in read] == [(r["translation"]["en"], r["translation"]["ar"]) for r in rows]
        return
    read = list(iter_conversations(local))
    assert not [r for r in read if isinstance(r, BadRow)], read
    assert [len(r.messages) for r in read] == [_expected_turns(r) for r in rows]
    for conversation in read:
        assert [m["role"] for m in conversation.messages if m["role"] != "system"][:2] == ["user", "assistant"]


@pytest.mark.parametrize("name", [n for n in SHAPES if n != "Helsinki-NLP/opus-100"])
def test_auto_reads_every_named_layout(name, tmp_path):
    """`layout: auto` (hala translate and hala filter on a user's file) reads each of them without fields."""
    rows = SHAPES[name]
    assert detect_layout(rows[0]) in ("instruction", "sharegpt", "messages", "columns")
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    from hala.recipe import DatasetRef

    read = list(iter_conversations(DatasetRef(path=str(path))))
    assert [len(r.messages) for r in read] == [_expected_turns(r) for r in rows]
