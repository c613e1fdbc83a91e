"""What hala evaluates: the Open Arabic LLM Leaderboard v2 (OALL v2), as lighteval defines it.

The reference is lighteval 0.13.0: `examples/tasks/OALL_v2_tasks.txt` names the six
multiple-choice tasks of the leaderboard's table (116 subsets; AlGhafa without
`mcq_exams_test_ar`, which OALL v2 dropped; ALRAGE, the seventh line, is a generative
LLM-judge task outside the six-task average) and `src/lighteval/tasks/multilingual/tasks/arabic.py`
their datasets, splits, prompts and metric. Every subset is scored zero-shot by acc_norm: the
choice with the highest log-likelihood divided by the choice's length in characters, scored
directly after the prompt (no space before it). A task's score is the unweighted mean of its
subsets; the six-task average is the mean of the six task scores; both on a 0-100 scale.

A prompt is an instruction and a query. With a chat template (a tokenizer whose
``chat_template`` is set), the instruction and the query are one user message and the template
adds the generation prompt; without one, the plain prompt joins them with a blank line, as
lighteval's prompt manager does (the instructions already end in a blank line, so plain prompts
carry four newlines there: lighteval's own layout, kept).

lm-eval is the engine: :func:`lm_eval_config` turns one subset into an lm-eval task, and
:func:`write_lm_eval_tasks` writes them all as YAML for a plain ``lm_eval --include_path``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import ascii_uppercase

from hala.corpora import bundled_path

REFERENCE = "lighteval 0.13.0 (examples/tasks/OALL_v2_tasks.txt; src/lighteval/tasks/multilingual/tasks/arabic.py)"
METRIC = "acc_norm"
METRIC_TEXT = "acc_norm: log-likelihood per character of the choice, zero-shot, choice scored right after the prompt"
SHOTS = 0

# Arabic answer letters, in lighteval's order (the fifth is a two-character letter, هـ).
AR_LETTERS = ["أ", "ب", "ج", "د", "هـ"]
# The smoke world's small copies of the six datasets, in their hub layout.
FIXTURES = bundled_path("smoke/benchmarks")


class BadRow(ValueError):
    """A dataset row that cannot be scored (its gold answer is not one of its choices, a field is missing)."""


@dataclass(frozen=True)
class Doc:
    """One scored item: the instruction, the whole query (instruction first), the choices and the gold index."""

    instruction: str
    query: str
    choices: tuple[str, ...]
    gold: int


def _doc(instruction: str, body: str, choices: list[str], gold: int) -> Doc:
    if not 0 <= gold < len(choices):
        raise BadRow(f"gold answer {gold} is outside its {len(choices)} choices")
    return Doc(instruction, instruction + body, tuple(choices), gold)


def _field(row: dict, name: str):
    if name not in row:
        raise BadRow(f"no field {name!r}")
    return row[name]


def _letter_index(letters: list[str], value, what: str) -> int:
    if value not in letters:
        raise BadRow(f"{what} {value!r} is not one of {', '.join(letters)}")
    return letters.index(value)


def _alghafa(row: dict) -> Doc:
    # Every sol column the subset has, empty or not: the subsets differ in how many they have.
    options = [row[f"sol{i}"] for i in range(1, 6) if f"sol{i}" in row]
    instruction = "الأسئلة التالية هي أسئلة متعددة الإختيارات مع الجواب الصحيح\n\n"
    body = f"السؤال: {_field(row, 'query')}\n" + "".join(f"{i}) {option}\n" for i, option in enumerate(options)) + "الإجابة:"
    try:
        gold = int(_field(row, "label"))
    except (TypeError, ValueError):
        raise BadRow(f"label {row.get('label')!r} is not a number") from None
    return _doc(instruction, body, [str(i) for i in range(len(options))], gold)


def _mmlu_options(row: dict) -> tuple[list[str], list[str], int]:
    """The options a row has (Option 1-5, empty ones left out), their Arabic letters, and the gold's position."""
    latin = [k for i, k in enumerate("ABCDE", 1) if row.get(f"Option {i}")]
    options = [row[f"Option {ascii_uppercase.index(k) + 1}"] for k in latin]
    gold = _letter_index(latin, _field(row, "Answer Key"), "Answer Key")
    return options, [AR_LETTERS[ascii_uppercase.index(k)] for k in latin], gold


def _arabic_mmlu(row: dict) -> Doc:
    options, letters, gold = _mmlu_options(row)
    instruction = "السؤال التالي هو سؤال متعدد الإختيارات. اختر الإجابة الصحيحة:\n\n"
    body = f"{_field(row, 'Question')}\n" + "".join(f"{k}. {o}\n" for k, o in zip(letters, options, strict=True)) + "الإجابة:"
    return _doc(instruction, body, letters, gold)


def _madinah_qa(row: dict) -> Doc:
    options, letters, gold = _mmlu_options(row)
    instruction = "بناءً على السياق أدناه، اختر الإجابة الصحيحة للسؤال التالي من قائمة الأجوبة:\n\n"
    # A missing context prints as "None", as in lighteval (the Grammar subset has none).
    body = f"\nالسياق:\n{_field(row, 'Context')}\nالسؤال:\n{_field(row, 'Question')}\n"
    body += "".join(f"{k}. {o}\n" for k, o in zip(letters, options, strict=True)) + "الإجابة:"
    return _doc(instruction, body, letters, gold)


def _exams(row: dict) -> Doc:
    subject = str(_field(row, "subject")).replace("_", " ")
    instruction = f"الأسئلة التالية هي أسئلة متعددة الإختيارات مع الجواب الصحيح حول {subject}. \n\n"
    lines = "\n".join(f" {AR_LETTERS[i]}) {_field(row, k)}\n" for i, k in enumerate("ABCD"))
    body = f"السؤال: {_field(row, 'question')}\n{lines}\nالإجابة:"
    return _doc(instruction, body, AR_LETTERS[:4], _letter_index(list("ABCD"), _field(row, "answer"), "answer"))


def _aratrust(row: dict) -> Doc:
    instruction = "السؤال التالي هو سؤال متعدد الإختيارات. اختر الإجابة الصحيحة: أ، ب أو ج. \n\n"
    # The option texts carry their own letters, so they are printed as they are.
    body = f"{_field(row, 'Question')}\n" + "".join(f"{_field(row, k)}\n" for k in "ABC") + "الإجابة:"
    return _doc(instruction, body, AR_LETTERS[:3], _letter_index(AR_LETTERS[:3], _field(row, "Answer"), "Answer"))


def _arbmmlu_ht(row: dict) -> Doc:
    choices = _field(row, "choices")
    instruction = "السؤال التالي هو سؤال متعدد الإختيارات. اختر الإجابة الصحيحة:\n\n"
    body = f"{_field(row, 'question')}\n" + "".join(f"{i}. {c}\n" for i, c in enumerate(choices, 1)) + "الإجابة:"
    try:
        gold = int(_field(row, "answer"))
    except (TypeError, ValueError):
        raise BadRow(f"answer {row.get('answer')!r} is not a number") from None
    return _doc(instruction, body, [str(i) for i in range(1, len(choices) + 1)], gold)


# fmt: off
ALGHAFA_SUBSETS = (
    "meta_ar_dialects", "meta_ar_msa", "multiple_choice_facts_truefalse_balanced_task",
    "multiple_choice_grounded_statement_soqal_task", "multiple_choice_grounded_statement_xglue_mlqa_task",
    "multiple_choice_rating_sentiment_no_neutral_task", "multiple_choice_rating_sentiment_task",
    "multiple_choice_sentiment_task",
)
ARABIC_MMLU_SUBSETS = (
    "Islamic Studies", "Islamic Studies (Middle School)", "Islamic Studies (Primary School)", "Islamic Studies (High School)",
    "Driving Test", "Natural Science (Middle School)", "Natural Science (Primary School)", "History (Middle School)",
    "History (Primary School)", "History (High School)", "General Knowledge", "General Knowledge (Middle School)",
    "General Knowledge (Primary School)", "Law (Professional)", "Physics (High School)", "Social Science (Middle School)",
    "Social Science (Primary School)", "Management (University)", "Arabic Language (Middle School)",
    "Arabic Language (Primary School)", "Arabic Language (High School)", "Political Science (University)",
    "Philosophy (High School)", "Accounting (University)", "Computer Science (Middle School)",
    "Computer Science (Primary School)", "Computer Science (High School)", "Computer Science (University)",
    "Geography (Middle School)", "Geography (Primary School)", "Geography (High School)", "Math (Primary School)",
    "Biology (High School)", "Economics (Middle School)", "Economics (High School)", "Economics (University)",
    "Arabic Language (General)", "Arabic Language (Grammar)", "Civics (Middle School)", "Civics (High School)",
)
MADINAH_QA_SUBSETS = ("Arabic Language (General)", "Arabic Language (Grammar)")
ARATRUST_SUBSETS = ("Trustfulness", "MentalHealth", "PhysicalHealth", "Offensive", "Ethics", "Privacy", "Unfairness", "Illegal")
ARBMMLU_HT_SUBSETS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history", "high_school_world_history",
    "human_aging", "human_sexuality", "international_law", "jurisprudence", "logical_fallacies", "machine_learning",
    "management", "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy", "virology",
    "world_religions",
)
# fmt: on


@dataclass(frozen=True)
class Task:
    """One of the six OALL v2 tasks: a dataset, its subsets (configs), the split scored and the prompt."""

    key: str
    title: str
    lighteval_name: str  # the name in OALL_v2_tasks.txt, before ":subset"
    dataset: str
    subsets: tuple[str, ...]
    split: str
    to_doc: Callable[[dict], Doc]

    def subset_names(self) -> list[str]:
        """Subsets as lighteval names them in OALL_v2_tasks.txt (``task:subset``, or the task alone)."""
        return [self.lighteval_name if s == "default" else f"{self.lighteval_name}:{s}" for s in self.subsets]

    @property
    def fixture_dir(self) -> Path:
        """The smoke world's copy: a dataset folder laid out as on the hub (README configs, one folder per subset)."""
        return FIXTURES / self.key


TASKS: dict[str, Task] = {
    t.key: t
    for t in [
        Task("alghafa", "AlGhafa", "alghafa", "OALL/AlGhafa-Arabic-LLM-Benchmark-Native", ALGHAFA_SUBSETS, "test", _alghafa),
        Task("arabic_mmlu", "ArabicMMLU", "arabic_mmlu", "MBZUAI/ArabicMMLU", ARABIC_MMLU_SUBSETS, "test", _arabic_mmlu),
        Task("exams", "EXAMS", "arabic_exams", "OALL/Arabic_EXAMS", ("default",), "test", _exams),
        Task("madinah_qa", "MadinahQA", "madinah_qa", "MBZUAI/MadinahQA", MADINAH_QA_SUBSETS, "test", _madinah_qa),
        Task("aratrust", "AraTrust", "aratrust", "asas-ai/AraTrust-categorized", ARATRUST_SUBSETS, "train", _aratrust),
        Task(
            "arbmmlu_ht", "ArbMMLU-HT", "arabic_mmlu_ht", "MBZUAI/human_translated_arabic_mmlu", ARBMMLU_HT_SUBSETS, "test",
            _arbmmlu_ht,
        ),  # fmt: skip
    ]
}


def parse_selection(names: list[str]) -> dict[str, tuple[str, ...]]:
    """Tasks and subsets a recipe names (``alghafa`` for all of a task, ``alghafa:meta_ar_msa`` for one subset).

    Raises ValueError naming what is unknown and listing the valid names.
    """
    chosen: dict[str, list[str]] = {}
    for name in names:
        key, _, subset = name.partition(":")
        if key not in TASKS:
            raise ValueError(f"unknown benchmark task {key!r}; the tasks are: {', '.join(TASKS)}")
        task = TASKS[key]
        if not subset:
            chosen[key] = list(task.subsets)
            continue
        if subset not in task.subsets:
            raise ValueError(f"unknown subset {subset!r} of {key}; its subsets are: {', '.join(task.subsets)}")
        if subset not in chosen.setdefault(key, []):
            chosen[key].append(subset)
    return {k: tuple(s for s in TASKS[k].subsets if s in v) for k, v in chosen.items()}


def fixture_subsets(task: Task) -> tuple[str, ...]:
    """The subsets the smoke world's copy of ``task`` holds (a folder per subset)."""
    root = task.fixture_dir
    return tuple(s for s in task.subsets if (root / slug(s)).is_dir())


def slug(subset: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", subset.lower()).strip("_")


def task_name(task: Task, subset: str, chat: bool) -> str:
    """The lm-eval task name of one subset; chat and plain prompts are different tasks."""
    return f"oall_v2{'_chat' if chat else ''}_{task.key}_{slug(subset)}"


def render_prompt(doc: Doc, chat: bool) -> str:
    """The text the model reads before the choice: the user message (chat) or the whole plain prompt."""
    rest = doc.query[len(doc.instruction) :].strip() if doc.query.startswith(doc.instruction) else doc.query
    return doc.instruction + rest if chat else doc.instruction + "\n\n" + rest


def convert_row(task: Task, row: dict, chat: bool) -> dict:
    """One dataset row as lm-eval's doc fields; a row that cannot be scored carries its reason instead."""
    try:
        doc = task.to_doc(row)
    except BadRow as err:
        return {"hala_prompt": "", "hala_choices": [], "hala_gold": 0, "hala_error": str(err)}
    return {"hala_prompt": render_prompt(doc, chat), "hala_choices": list(doc.choices), "hala_gold": doc.gold, "hala_error": ""}


def process_docs_for(key: str, chat: bool) -> Callable:
    """lm-eval's ``process_docs`` for a task: rows as prompts; unscorable rows left out (counted by the caller)."""
    task = TASKS[key]

    def process(dataset):
        converted = dataset.map(lambda row: convert_row(task, row, chat))
        return converted.filter(lambda row: not row["hala_error"])

    process.__name__ = f"process_{key}{'_chat' if chat else ''}"
    return process


def fixture_file(task: Task, subset: str) -> Path:
    return task.fixture_dir / slug(subset) / f"{task.split}.jsonl"


def dataset_args(task: Task, subset: str, source: str) -> dict:
    """``datasets.load_dataset`` arguments for one subset: the hub dataset's config, or the smoke world's file.

    The smoke copy is read as a JSON file, not as a dataset folder: datasets caches a local folder
    by its name and config alone, so an edited or moved copy could be served from an old cache.
    """
    if source == "hub":
        return {"path": task.dataset, "name": subset}
    return {"path": "json", "data_files": {task.split: str(fixture_file(task, subset))}}


def _lm_eval_dataset(args: dict) -> dict:
    out = {"dataset_path": args["path"]}
    if "name" in args:
        out["dataset_name"] = args["name"]
    if "data_files" in args:
        out["dataset_kwargs"] = {"data_files": args["data_files"]}
    return out


def lm_eval_config(task: Task, subset: str, *, source: str, chat: bool) -> dict:
    """The lm-eval task configuration of one subset."""
    return {
        "task": task_name(task, subset, chat),
        **_lm_eval_dataset(dataset_args(task, subset, source)),
        "test_split": task.split,
        "output_type": "multiple_choice",
        "process_docs": process_docs_for(task.key, chat),
        "doc_to_text": "{{hala_prompt}}",
        "doc_to_choice": "{{hala_choices}}",
        "doc_to_target": "{{hala_gold}}",
        # The choice follows the prompt directly (with a chat template lm-eval drops the delimiter itself).
        "target_delimiter": "",
        "num_fewshot": SHOTS,
        "metric_list": [
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 2.0, "reference": REFERENCE},
    }


def describe() -> list[dict]:
    """What is evaluated, per task: dataset, subsets, split, metric and shots (``hala benchmarks``)."""
    return [
        {
            "task": t.key,
            "title": t.title,
            "dataset": t.dataset,
            "subsets": list(t.subsets),
            "lighteval_names": t.subset_names(),
            "split": t.split,
            "metric": METRIC,
            "shots": SHOTS,
            "smoke_fixture_subsets": list(fixture_subsets(t)),
        }
        for t in TASKS.values()
    ]


def write_lm_eval_tasks(out_dir: Path, source: str = "hub") -> list[Path]:
    """Every subset as an lm-eval YAML task, a group per task (the unweighted mean of its subsets) and
    ``oall_v2`` / ``oall_v2_chat`` (the six groups), for ``lm_eval --include_path OUT_DIR``.

    The ``_chat`` tasks are for ``--apply_chat_template`` (a model whose tokenizer has a chat template).
    """
    import yaml

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    functions = ["# Generated by `hala benchmarks --lm-eval-tasks`: lm-eval's process_docs for each task.",
                 "from hala.benchmarks import process_docs_for", ""]  # fmt: skip
    written = []
    mean = [{"metric": "acc_norm", "aggregation": "mean", "weight_by_size": False}]
    for chat in (False, True):
        suffix = "_chat" if chat else ""
        groups = []
        for task in TASKS.values():
            subsets = task.subsets if source == "hub" else fixture_subsets(task)
            fn = f"{task.key}{suffix}"
            functions.append(f"{fn} = process_docs_for({task.key!r}, chat={chat})")
            names = []
            for subset in subsets:
                config = lm_eval_config(task, subset, source=source, chat=chat)
                config["process_docs"] = f"!function utils.{fn}"
                names.append(config["task"])
                path = out_dir / f"{config['task']}.yaml"
                text = yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
                path.write_text(text.replace(f"'!function utils.{fn}'", f"!function utils.{fn}"), encoding="utf-8")
                written.append(path)
            group = f"oall_v2{suffix}_{task.key}"
            groups.append(group)
            path = out_dir / f"{group}.yaml"
            path.write_text(yaml.safe_dump({"group": group, "task": names, "aggregate_metric_list": mean,
                                            "metadata": {"version": 2.0}}, sort_keys=False), encoding="utf-8")  # fmt: skip
            written.append(path)
        # No score of its own: lm-eval averages a group of groups over all their subsets, and
        # OALL's six-task average is the mean of the six task scores, which hala computes.
        path = out_dir / f"oall_v2{suffix}.yaml"
        path.write_text(yaml.safe_dump({"group": f"oall_v2{suffix}", "task": groups, "metadata": {"version": 2.0}},
                                       sort_keys=False), encoding="utf-8")  # fmt: skip
        written.append(path)
    (out_dir / "utils.py").write_text("\n".join(functions) + "\n", encoding="utf-8")
    return [*written, out_dir / "utils.py"]
