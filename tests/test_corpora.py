import json

import pytest

from hala.corpora import DataError, detect_layout, file_hash, read_conversations, read_pairs, write_jsonl
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


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"en": "a", "ar": "b"}\n{not json}\n', "line 2 is not valid JSON"),
        ('["a list"]\n', "line 1 is not a JSON object"),
        ('{"en": "a", "ar": "  "}\n', "ar is missing or empty"),
        ('{"translation": {"en": "a"}}\n', "translation.ar is missing or empty"),
    ],
)
def test_bad_rows_fail_with_one_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_pairs(DatasetRef(path=str(path)), "en", "ar")


def test_missing_file_and_wrong_layout(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_pairs(DatasetRef(path=str(tmp_path / "none.jsonl")), "en", "ar")
    convs = _write(tmp_path, [{"messages": [{"role": "user", "content": "x"}]}])
    with pytest.raises(DataError, match="layout 'messages' holds no parallel pairs"):
        read_pairs(DatasetRef(path=convs), "en", "ar")


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
