"""The paper's own result figures, as plain data, and the report tables that show them beside ours.

Source: Lingxiao Li, Yihao Wang, Jiacheng Fan, Jing Li, Sujuan Qin, Qiaoyan Wen, Fei Gao, "Quantum Knowledge
Distillation for Large Language Models", arXiv 2505.13205 (v1 of 19 May 2025, v2 of 1 August 2025),
https://arxiv.org/abs/2505.13205. Its result tables, numbered as in v2 (``TABLE_NUMBERS``): Table 4 emotion
analysis, Table 5 text hiding (steganalysis), Table 6 thematic classification, Table 7 the loss ablation, Table 8
the teacher ablation.

This module is the one place the paper's figures live. Each recorded table is a ``PaperTable`` with the version
and table number it was read from, the paper's setting for it (dataset, teacher LLM, qubits, ...) and its cells
exactly as printed there (strings: nothing is rounded, rescaled or recomputed). Only figures read in the paper
itself are recorded; nothing is estimated or taken from secondary sources. A table not recorded is absent from
``TASK_TABLES`` (or ``None``), and the report then says that the paper's figures are not shown instead of
showing any: at present none of Tables 4–8 is recorded (no copy of their text was reachable offline). To add one,
copy it from the paper into a ``PaperTable`` here; the report shows it beside ours with no other change.

Until then the report quotes one figure per task, the paper's QD-LLM student accuracy as qd-llm's issue 25 cites it
(``QUOTED_STUDENT``), marked as a quotation not checked against the paper here.
"""

from __future__ import annotations

from dataclasses import dataclass

from stages.report.tables import Table

CITATION = "Li et al. 2025, arXiv 2505.13205"
URL = "https://arxiv.org/abs/2505.13205"
PAPER_TASKS = ("emotion", "hiding", "thematic")
PAPER_DATA = {"emotion": "senti", "hiding": "stega", "thematic": "topic"}  # the authors' released data per task
TABLE_NUMBERS = {"emotion": 4, "hiding": 5, "thematic": 6, "loss ablation": 7, "teacher ablation": 8}


@dataclass(frozen=True)
class PaperTable:
    """One of the paper's result tables, as printed in one version of it."""

    number: int  # the table's number in that version
    version: str  # "v1" or "v2"
    subject: str  # a task of PAPER_TASKS, "loss ablation" or "teacher ablation"
    setting: str  # the paper's setting for it: dataset, teacher LLM, qubits and layers, ...
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]  # the cells exactly as printed; the first names the method

    def __post_init__(self) -> None:
        if any(len(r) != len(self.headers) for r in self.rows):
            raise ValueError(f"paper Table {self.number}: every row needs {len(self.headers)} cells")


# ---------------------------------------------------------------- the paper's figures (see the module docstring)

TASK_TABLES: dict[str, PaperTable] = {}  # task -> the paper's results on it (Tables 4–6)
LOSS_ABLATION: PaperTable | None = None  # Table 7
TEACHER_ABLATION: PaperTable | None = None  # Table 8

# The paper's QD-LLM student test accuracy (%) on its own data for each task (its senti, stega and topic files), as
# qd-llm issue 25 quotes it from Tables 4–6; shown as a quotation while the tables themselves are not recorded.
QUOTED_STUDENT: dict[str, str] = {"emotion": "80.12", "hiding": "81.23", "thematic": "85.81"}


# ---------------------------------------------------------------- report tables


def paper_table(t: PaperTable) -> Table:
    """A report table of the paper's figures, titled as the paper's numbers in the paper's setting."""
    return Table(title=f"Paper's Table {t.number} ({CITATION}{t.version}): {t.subject}, {t.setting} — "
                       "their numbers, not re-run here",
                 headers=list(t.headers), rows=[list(r) for r in t.rows],
                 note=f"Copied from the paper ({URL}{t.version}, Table {t.number}); its setting differs from ours "
                      "(see 'Differences from the paper's setting').")


def _missing(subject: str) -> str:
    text = (f"The paper's own Table {TABLE_NUMBERS[subject]} ({subject}; {CITATION}) is not recorded in this project "
            f"(stages/report/paper.py), so its figures are not shown here; see {URL}.")
    if subject in QUOTED_STUDENT:
        text += (f" Quoted, not checked here: its QD-LLM student reaches {QUOTED_STUDENT[subject]} % test accuracy on "
                 f"the authors' {PAPER_DATA[subject]} files (as qd-llm issue 25 cites Table {TABLE_NUMBERS[subject]}); "
                 "compare it with a run on those files (`make reproduce DATA_ROOT=…/qdllm-paper`), not with another "
                 "dataset of the task.")
    return text


def task_table(task: str) -> Table | None:
    """The paper's results table for one of its tasks; None for another task or one not recorded."""
    t = TASK_TABLES.get(task)
    return paper_table(t) if t is not None else None


def task_markdown(task: str) -> list[str]:
    """Report lines after our Table 4–6 for ``task``: the paper's table, a note that it is not recorded, or nothing
    when the task is not one of the paper's."""
    if task not in PAPER_TASKS:
        return []
    t = task_table(task)
    return [t.markdown() if t is not None else _missing(task), ""]


def ablation_markdown() -> list[str]:
    """Report lines beside our Table 7 and 8 style ablations: the paper's loss and teacher ablations."""
    out = []
    for subject, t in (("loss ablation", LOSS_ABLATION), ("teacher ablation", TEACHER_ABLATION)):
        out += [paper_table(t).markdown() if t is not None else _missing(subject), ""]
    return out
