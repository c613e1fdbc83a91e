import json

import pytest

from hala.corpora import (
    BadRow,
    DataError,
    PairRow,
    detect_layout,
    file_hash,
    iter_conversations,
    iter_pairs,
    read_conversations,
    read_pairs,
    write_jsonl,
)
from hala.recipe import DatasetRef


def _write(tmp_path, rows, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_pairs_from_opus_and_columns(tmp_path):
    opus = _write(tmp_path, [{"translation": {"en": "Hello.", "ar": "مرحبا."}}, {"translation": {"en": "Yes.", "ar": "نعم."}}])
    assert read_pairs(DatasetRef(path=opus), "en", "ar") == [("Hello.", "مرحبا."), ("Yes.", "نعم.")]
    cols = _write(tmp_path, [{"en": "Good.", "ar": "جيد."}], "c.jsonl")
    assert read_pairs(DatasetRef(path=cols), "en", "ar") == [("Good.", "جيد.")]


def test_skip_and_limit_window(tmp_path):
    path = _write(tmp_path, [{"en": f"s{i}", "ar": f"ع{i}"} for i in range(10)])
    pairs = read_pairs(DatasetRef(path=path, skip=3, limit=4), "en", "ar")
    assert [p[0] for p in pairs] == ["s3", "s4", "s5", "s6"]


def test_conversations_from_every_chat_layout(tmp_path):
    rows = [
        {"instruction": "Say hi.", "response": "Hi."},
        {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]},
        {"messages": [{"role": "user", "content": "U"}, {"role": "assistant", "content": "V"}]},
    ]
    assert [detect_layout(r) for r in rows] == ["instruction", "sharegpt", "messages"]
    convs = read_conversations(DatasetRef(path=_write(tmp_path, rows)))
    assert convs[0] == [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi."}]
    assert [m["role"] for m in convs[1]] == ["system", "user", "assistant"]
    assert convs[2][1] == {"role": "assistant", "content": "V"}


def _conversations_and_rejects(path: str, **options) -> tuple[list, list]:
    rows = list(iter_conversations(DatasetRef(path=path, **options)))
    return [r.messages for r in rows if not isinstance(r, BadRow)], [(r.row, r.reason) for r in rows if isinstance(r, BadRow)]


def test_one_turn_policy_for_every_layout(tmp_path):
    """An empty system turn is dropped, an empty user or assistant turn rejects its row, in every layout."""
    empty_system = [
        {"conversations": [{"from": "system", "value": ""}, {"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]},
        {"messages": [{"role": "system", "content": "  "}, {"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]},
        {"system_prompt": "", "question": "Q?", "response": "A."},
    ]
    for row in empty_system:
        layout = {"layout": "columns", "fields": {"system": "system_prompt", "user": "question", "assistant": "response"}} if "question" in row else {}
        kept, rejects = _conversations_and_rejects(_write(tmp_path, [row]), **layout)
        assert (kept, rejects) == ([[{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]], []), row
    empty_answer = [
        {"conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": " "}]},
        {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": ""}]},
    ]
    kept, rejects = _conversations_and_rejects(_write(tmp_path, [{"instruction": "ok", "response": "fine"}, *empty_answer]))
    assert len(kept) == 1 and rejects == [(2, "conversations[1].value is empty"), (3, "messages[1].content is empty")]


def test_other_roles_follow_the_recipe(tmp_path):
    row = {"messages": [{"role": "user", "content": "Weather?"}, {"role": "tool", "content": "{\"t\": 21}"}, {"role": "assistant", "content": "21 C."}]}
    gpt = {"conversations": [{"from": "human", "value": "Q?"}, {"from": "function_call", "value": "f()"}, {"from": "gpt", "value": "A."}]}
    plain = {"instruction": "Hi.", "response": "Hello."}
    path = _write(tmp_path, [plain, row, gpt])
    kept, rejects = _conversations_and_rejects(path)  # the default: reject, naming the role
    assert len(kept) == 1 and rejects == [
        (2, "messages[1].content has role 'tool' (other_roles: reject; drop or keep would take the row)"),
        (3, "conversations[1].value has role 'function_call' (other_roles: reject; drop or keep would take the row)"),
    ]
    kept, _ = _conversations_and_rejects(path, other_roles="drop")
    assert [[m["role"] for m in c] for c in kept[1:]] == [["user", "assistant"], ["user", "assistant"]]
    kept, _ = _conversations_and_rejects(path, other_roles="keep")
    assert kept[1][1] == {"role": "tool", "content": '{"t": 21}'} and kept[2][1]["role"] == "function_call"


def test_realign_items_are_sharegpt_turns(tmp_path):
    row = {"id": 7, "items": [{"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "Blue."}], "tag": "reason"}
    assert detect_layout(row) == "sharegpt"
    kept, rejects = _conversations_and_rejects(_write(tmp_path, [row]))
    assert kept == [[{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]] and rejects == []


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"en": "a", "ar": "b"}\n{not json}\n', "row 2: not valid JSON"),
        ('["a list"]\n', "no parallel pairs in its first 1 rows; row 1: not a JSON object but list"),
        ('{"en": "a", "ar": "b"}\n{"en": "a", "ar": "  "}\n', "row 2: ar is empty"),
        ('{"en": "a", "ar": "b"}\n{"translation": {"en": "a"}}\n', "row 2: translation.ar is missing"),
        ('{"en": "a", "ar": "b"}\n{"en": "a", "ar": 3}\n', "row 2: ar is a int, not text"),
    ],
)
def test_strict_readers_fail_on_any_bad_row_with_one_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_pairs(DatasetRef(path=str(path)), "en", "ar")


def test_missing_file_and_wrong_layout(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_pairs(DatasetRef(path=str(tmp_path / "none.jsonl")), "en", "ar")
    convs = _write(tmp_path, [{"messages": [{"role": "user", "content": "x"}]}])
    with pytest.raises(DataError, match="row 1: layout 'messages' holds conversations, not parallel pairs"):
        read_pairs(DatasetRef(path=convs), "en", "ar")
    pairs = _write(tmp_path, [{"en": "a", "ar": "b"}], "p.jsonl")
    with pytest.raises(DataError, match="no conversations in its first 1 rows \\(layout opus\\)"):
        list(iter_conversations(DatasetRef(path=pairs, layout="opus")))


def test_streaming_readers_turn_each_bad_row_into_a_reject_and_go_on(tmp_path):
    path = tmp_path / "mixed.jsonl"
    big = json.dumps({"en": "x" * 5000, "ar": "y"})
    path.write_bytes(
        b'{"en": "One.", "ar": "\xd9\x88\xd8\xa7\xd8\xad\xd8\xaf."}\n'
        b"\n"  # blank lines are not rows
        b"{oops\n"
        b'{"en": "Two \xff.", "ar": "x"}\n'
        + big.encode() + b"\n"
        b'{"en": "Three.", "ar": ""}\n'
        b'{"title": "no pair here"}\n'
        b'{"en": "Four.", "ar": "\xd8\xa3\xd8\xb1\xd8\xa8\xd8\xb9\xd8\xa9."}'  # no final newline
    )
    items = list(iter_pairs(DatasetRef(path=str(path), max_row_bytes=1000), "en", "ar"))
    assert [(i.row, i.source, i.target) for i in items if isinstance(i, PairRow)] == [(1, "One.", "واحد."), (8, "Four.", "أربعة.")]
    bad = [(i.row, i.reason) for i in items if isinstance(i, BadRow)]
    assert bad == [
        (3, "not valid JSON (Expecting property name enclosed in double quotes)"),
        (4, "invalid UTF-8 at byte 12"),
        (5, f"row of {len(big)} bytes is over the limit of 1000"),
        (6, "ar is empty"),
        (7, "no en/ar columns and no translation object (keys: title)"),
    ]
    megabyte = next(i for i in items if isinstance(i, BadRow) and i.row == 5)
    assert len(megabyte.raw) < 2100 and megabyte.raw.endswith(f"[{len(big)} bytes in all]")
    assert megabyte.reject("d")["reason"] == f"bad row: row of {len(big)} bytes is over the limit of 1000"


def test_parquet_rows_stream_in_batches(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"en": [f"Sentence {i}." for i in range(3000)], "ar": [f"جملة {i}." for i in range(3000)]})
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=1000)
    items = list(iter_pairs(DatasetRef(path=str(tmp_path / "p.parquet"), skip=1500, limit=1000), "en", "ar"))
    assert len(items) == 1000 and items[0].row == 1501 and items[-1].source == "Sentence 2499."
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="broken.parquet: not a readable Parquet file"):
        list(iter_pairs(DatasetRef(path=str(tmp_path / "broken.parquet")), "en", "ar"))


def test_write_jsonl_is_atomic_and_counts(tmp_path):
    out = tmp_path / "sub" / "o.jsonl"
    assert write_jsonl(out, ({"i": i} for i in range(5))) == 5
    assert not (tmp_path / "sub" / "o.jsonl.partial").exists()
    assert [json.loads(line)["i"] for line in out.read_text().splitlines()] == [0, 1, 2, 3, 4]
    h1 = file_hash(out)
    write_jsonl(out, [{"i": 9}])
    assert file_hash(out) != h1


def test_conversations_from_named_columns(tmp_path):
    rows = [
        {"system_prompt": "You are helpful.", "question": "Name a colour.", "response": "Blue."},
        {"system_prompt": "", "question": "Name a fruit.", "response": "An apple."},
    ]
    ds = DatasetRef(path=_write(tmp_path, rows), layout="columns", fields={"system": "system_prompt", "user": "question", "assistant": "response"})
    convs = read_conversations(ds)
    assert [m["role"] for m in convs[0]] == ["system", "user", "assistant"]
    assert convs[1] == [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "An apple."}]


def test_json_that_python_cannot_take_is_a_bad_row_not_a_crash(tmp_path):
    path = tmp_path / "odd.jsonl"
    lines = [
        '{"en": "Good.", "ar": "جيد."}',
        '{"en": "\\ud800 lone half", "ar": "x"}',
        '{"en": "Pair \\ud83d\\ude00 ok.", "ar": "جيد."}',  # an escaped surrogate pair is an ordinary emoji
        "[" * 100000 + "]" * 100000,
        '{"n": ' + "9" * 5000 + "}",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    items = list(iter_pairs(DatasetRef(path=str(path), max_row_bytes=1_000_000), "en", "ar"))
    assert [i.row for i in items if isinstance(i, PairRow)] == [1, 3]
    reasons = {i.row: i.reason for i in items if isinstance(i, BadRow)}
    assert reasons[2] == "text holds a lone UTF-16 surrogate (\\ud800-\\udfff escape)"
    assert reasons[4].startswith("not readable JSON (RecursionError") and reasons[5].startswith("not readable JSON (ValueError")
