"""The Arabic benchmark suite the Hala report uses (Open Arabic LLM Leaderboard v2), as lm-eval tasks.

Each benchmark names its real Hugging Face dataset and a function that turns one of its rows
into a prompt, the answer keys and the gold index. Prompts and answer keys follow lighteval's
OALL v2 tasks (src/lighteval/tasks/multilingual/tasks/arabic.py): the model is scored on the
log-likelihood of the answer letter or number after the prompt. Offline runs read bundled
fixtures with the same field names instead of the hub datasets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hala.corpora import bundled_path

AR_LETTERS = ["أ", "ب", "ج", "د", "هـ"]
LATIN_LETTERS = ["A", "B", "C", "D", "E"]


@dataclass(frozen=True)
class Doc:
    query: str
    choices: list[str]
    gold: int


def _empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _alghafa(row: dict) -> Doc:
    options = [row[f"sol{i}"] for i in range(1, 6) if not _empty(row.get(f"sol{i}"))]
    lines = "".join(f"{i}) {opt}\n" for i, opt in enumerate(options))
    query = f"الأسئلة التالية هي أسئلة متعددة الإختيارات مع الجواب الصحيح\n\nالسؤال: {row['query']}\n{lines}الإجابة:"
    return Doc(query, [str(i) for i in range(len(options))], int(row["label"]))


def _mmlu_style(row: dict, with_context: bool) -> Doc:
    keys = [k for k, i in zip(LATIN_LETTERS, range(1, 6), strict=True) if not _empty(row.get(f"Option {i}"))]
    options = [row[f"Option {LATIN_LETTERS.index(k) + 1}"] for k in keys]
    letters = [AR_LETTERS[LATIN_LETTERS.index(k)] for k in keys]
    lines = "".join(f"{ar}. {opt}\n" for ar, opt in zip(letters, options, strict=True))
    if with_context:
        intro = "بناءً على السياق أدناه، اختر الإجابة الصحيحة للسؤال التالي من قائمة الأجوبة:\n\n"
        context = row.get("Context") or ""
        body = f"\nالسياق:\n{context}\nالسؤال:\n{row['Question']}\n"
    else:
        intro = "السؤال التالي هو سؤال متعدد الإختيارات. اختر الإجابة الصحيحة:\n\n"
        body = f"{row['Question']}\n"
    return Doc(f"{intro}{body}{lines}الإجابة:", letters, keys.index(row["Answer Key"].strip()))


def _exams(row: dict) -> Doc:
    subject = str(row.get("subject", "")).replace("_", " ")
    lines = "\n".join(f" {AR_LETTERS[i]}) {row[k]}\n" for i, k in enumerate("ABCD"))
    query = (
        f"الأسئلة التالية هي أسئلة متعددة الإختيارات مع الجواب الصحيح حول {subject}. \n\n"
        f"السؤال: {row['question']}\n{lines}\nالإجابة:"
    )
    return Doc(query, AR_LETTERS[:4], "ABCD".index(row["answer"].strip()))


def _aratrust(row: dict) -> Doc:
    # AraTrust option texts already carry their letter, so they are printed as they are.
    options = "".join(f"{row[k]}\n" for k in "ABC")
    query = f"السؤال التالي هو سؤال متعدد الإختيارات. اختر الإجابة الصحيحة: أ، ب أو ج. \n\n{row['Question']}\n{options}الإجابة:"
    return Doc(query, AR_LETTERS[:3], AR_LETTERS.index(row["Answer"].strip()))


def _arbmmlu_ht(row: dict) -> Doc:
    lines = "".join(f"{i}. {opt}\n" for i, opt in enumerate(row["choices"], 1))
    query = f"السؤال التالي هو سؤال متعدد الإختيارات. اختر الإجابة الصحيحة:\n\n{row['question']}\n{lines}الإجابة:"
    return Doc(query, [str(i) for i in range(1, len(row["choices"]) + 1)], int(row["answer"]))


@dataclass(frozen=True)
class Benchmark:
    key: str
    title: str
    hf_dataset: str
    hf_subset: str | None
    test_split: str
    to_doc: Callable[[dict], Doc]

    @property
    def fixture(self):
        return bundled_path(f"smoke/benchmarks/{self.key}.jsonl")


SUITE: dict[str, Benchmark] = {
    b.key: b
    for b in [
        Benchmark("alghafa", "AlGhafa", "OALL/AlGhafa-Arabic-LLM-Benchmark-Native", "mcq_exams_test_ar", "test", _alghafa),
        Benchmark(
            "arabic_mmlu", "ArabicMMLU", "MBZUAI/ArabicMMLU", "General Knowledge", "test", lambda r: _mmlu_style(r, False)
        ),
        Benchmark("exams", "EXAMS", "OALL/Arabic_EXAMS", "default", "test", _exams),
        Benchmark(
            "madinah_qa", "MadinahQA", "MBZUAI/MadinahQA", "Arabic Language (General)", "test", lambda r: _mmlu_style(r, True)
        ),
        Benchmark("aratrust", "AraTrust", "asas-ai/AraTrust-categorized", "Ethics", "train", _aratrust),
        Benchmark("arbmmlu_ht", "ArbMMLU-HT", "MBZUAI/human_translated_arabic_mmlu", "miscellaneous", "test", _arbmmlu_ht),
    ]
}


def _process_docs(benchmark: Benchmark):
    def process(dataset):
        def convert(row):
            doc = benchmark.to_doc(row)
            return {"hala_query": doc.query, "hala_choices": doc.choices, "hala_gold": doc.gold}

        return dataset.map(convert)

    return process


def lm_eval_task(key: str, source: str, num_fewshot: int = 0) -> dict:
    """An lm-eval task configuration for one benchmark, from the hub or from the bundled fixture."""
    bench = SUITE[key]
    config: dict = {
        "task": f"hala_{key}",
        "output_type": "multiple_choice",
        "test_split": "test" if source == "fixtures" else bench.test_split,
        "process_docs": _process_docs(bench),
        "doc_to_text": "{{hala_query}}",
        "doc_to_choice": "{{hala_choices}}",
        "doc_to_target": "{{hala_gold}}",
        "target_delimiter": " ",
        "num_fewshot": num_fewshot,
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }
    if source == "fixtures":
        config["dataset_path"] = "json"
        config["dataset_kwargs"] = {"data_files": {"test": str(bench.fixture)}}
    else:
        config["dataset_path"] = bench.hf_dataset
        config["dataset_name"] = bench.hf_subset
    return config
