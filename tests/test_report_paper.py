"""The paper's own figures in the report (stages/report/paper.py) and the same-data rule of the Table 8 style
teacher ablation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_report import tables, write_run, write_teacher

from stages.report import paper
from stages.report.runs import load_runs, load_teachers
from stages.report.tables import teacher_ablation_tables, teacher_data_key

# A made-up paper table: these tests check how the report shows whatever paper.py records, not the paper's values.
FAKE = paper.PaperTable(number=4, version="v2", subject="emotion", setting="made-up setting for the test",
                        headers=("Method", "Acc (%)", "F1 (%)"), rows=(("QD-LLM", "12.34", "56.78"),
                                                                       ("LoRA", "90.12", "34.56")))


def teacher(cache: Path, key: str, data_key: str | None, **kw) -> dict:
    """A synthetic teacher cache whose manifest records ``data_key`` as the teacher stage writes it (top level)."""
    m = write_teacher(cache, key, **kw)
    m["inputs"].pop("data_key")
    if data_key is not None:
        m["data_key"] = m["inputs"]["data_key"] = data_key
    (cache / "teacher" / key / "manifest.json").write_text(json.dumps(m))
    return m


def build(monkeypatch) -> str:
    from stages.report import build as B

    monkeypatch.setattr(B, "paper_teacher_params", lambda: ([], ""))
    return B.build_report().read_text()


def after(md: str, title_start: str) -> tuple[list[str], str]:
    """The lines after the bold title starting with ``title_start`` (its table included) up to the next bold title,
    and that next title."""
    lines = md.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("**" + title_start))
    j = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("**"))
    return lines[i + 1:j], lines[j].strip("*")


# ---------------------------------------------------------------- the paper's tables beside ours


def test_paper_table_follows_ours_for_a_paper_task_and_not_for_an_own_task(isolated_dirs, monkeypatch):
    cache = isolated_dirs / "cache"
    t1 = teacher(cache, "a" * 16, "d" * 16, seed=1)
    t2 = teacher(cache, "b" * 16, "e" * 16, task="mytask", classes=("no", "yes"), seed=2)
    write_run(cache, "1000000000000001", t1, "quantum", seed=1)
    write_run(cache, "2000000000000001", t2, "quantum", seed=2)
    monkeypatch.setattr(paper, "TASK_TABLES", {"emotion": FAKE})
    md = build(monkeypatch)

    _, title = after(md, "Table 4–6 style: emotion")  # the paper's table comes right after ours
    assert title.startswith("Paper's Table 4 (Li et al. 2025, arXiv 2505.13205v2): emotion, made-up setting")
    assert "their numbers, not re-run here" in title
    rows = tables(md)[title]
    assert [[r[h] for h in FAKE.headers] for r in rows] == [list(r) for r in FAKE.rows]
    assert md.count("**Paper's Table 4") == 1

    between, following = after(md, "Table 4–6 style: mytask")
    assert following.startswith("Cost:")  # our cost table follows at once: nothing of the paper's
    assert not any("paper" in ln.lower() for ln in between)


def test_each_paper_task_shows_the_papers_table_with_every_baseline(isolated_dirs, monkeypatch):
    cache = isolated_dirs / "cache"
    t = teacher(cache, "a" * 16, "d" * 16, task="hiding", classes=("cover", "stego"), seed=1)
    write_run(cache, "1000000000000001", t, "quantum", seed=1)
    md = build(monkeypatch)
    _, title = after(md, "Table 4–6 style: hiding")
    assert title.startswith("Paper's Table 5 (Li et al. 2025, arXiv 2505.13205v2): hiding")
    rows = tables(md)[title]
    assert {r["method"] for r in rows} == {"TinyBERT", "MiniLLM", "DistilBERT", "PKD", "Ours"}
    mean = {r["method"]: r["Acc"] for r in rows if r["teacher"] == "mean over the five teachers"}
    assert mean["MiniLLM"] == "0.8186" and mean["Ours"].startswith("0.8123")
    assert "**Paper's Table 4" not in md  # the emotion table is for emotion only
    for n in (1, 2, 3, 7, 8):  # the setting tables and the ablations
        assert md.count(f"**Paper's Table {n} (") == 1, n
    assert "not recorded" not in md and "Quoted, not checked" not in md


def test_recorded_cells_are_the_shipped_transcription_cell_by_cell():
    """Where the authors' data with its paper-tables transcription is present (../shared here), every recorded cell
    equals the CSV's; Table 3's two blocks are one table with an empty proportion for the teachers."""
    import csv

    here = Path(__file__).resolve().parents[2] / "shared" / "data" / "qdllm-paper" / "paper-tables"
    if not here.is_dir():
        pytest.skip("the paper-tables transcription is not on this machine")
    for t in paper.ALL_TABLES:
        rows = [r for r in csv.reader(open(here / f"table{t.number}.csv", newline="")) if any(c.strip() for c in r)]
        if t.number == 3:
            k = next(i for i, r in enumerate(rows) if r[0] == "method")
            rows = [rows[0] + ["proportion"]] + [r + [""] for r in rows[1:k]] + rows[k + 1:]
            rows[0][0] = "model"
        assert tuple(rows[0]) == t.headers, t.number
        assert [tuple(r) for r in rows[1:]] == list(t.rows), t.number


def test_task_markdown_shows_exactly_the_modules_data():
    assert paper.task_markdown("mytask") == [] and paper.task_table("mytask") is None
    for task in paper.PAPER_TASKS:
        lines = paper.task_markdown(task)
        recorded = paper.TASK_TABLES[task]
        (title, rows), = tables("\n".join(lines)).items()
        assert title.startswith(f"Paper's Table {recorded.number} (Li et al. 2025, arXiv 2505.13205{recorded.version})")
        assert [[r[h] for h in recorded.headers] for r in rows] == [list(r) for r in recorded.rows]


def test_recorded_paper_tables_name_their_table_version_and_setting():
    for t in paper.ALL_TABLES:
        subject = t.subject
        assert t.subject == subject and t.number == paper.TABLE_NUMBERS[subject] and t.version in ("v1", "v2")
        assert t.setting and t.rows and all(len(r) == len(t.headers) for r in t.rows)
    with pytest.raises(ValueError, match="cells"):
        paper.PaperTable(4, "v2", "emotion", "s", ("Method", "Acc"), (("QD-LLM",),))


def test_paper_ablations_are_in_the_ablations_section(isolated_dirs, monkeypatch):
    cache = isolated_dirs / "cache"
    t = teacher(cache, "a" * 16, "d" * 16, seed=1)
    write_run(cache, "1000000000000001", t, "quantum", seed=1)
    write_run(cache, "1000000000000002", t, "quantum", seed=2, loss="ce")
    loss = paper.PaperTable(7, "v2", "loss ablation", "made-up", ("Loss", "Acc (%)"), (("CE", "1.00"),))
    monkeypatch.setattr(paper, "LOSS_ABLATION", loss)
    md = build(monkeypatch)
    ablations = md[md.index("## Ablations"):]
    ours, theirs = ablations.index("**Table 7 style"), ablations.index("**Paper's Table 7 (Li et al. 2025, arXiv")
    assert ours < theirs
    title = next(t for t in tables(ablations) if t.startswith("Paper's Table 7"))
    assert "2505.13205v2" in title and tables(ablations)[title] == [{"Loss": "CE", "Acc (%)": "1.00"}]
    assert "**Paper's Table 8 (Li et al. 2025, arXiv 2505.13205v2): teacher ablation" in ablations


# ---------------------------------------------------------------- Table 8 style: only teachers of the same data


def test_teacher_ablation_never_mixes_data_keys(isolated_dirs, monkeypatch):
    cache = isolated_dirs / "cache"
    reviews = teacher(cache, "a" * 16, "1" * 16, seed=1)  # emotion on one dataset (e.g. movie reviews)
    tweets = teacher(cache, "b" * 16, "2" * 16, model="bloomz-1b1", seed=2)  # emotion on another (e.g. tweets)
    tweets2 = teacher(cache, "c" * 16, "2" * 16, model="opt-6.7b", seed=3)  # another teacher on the tweets
    for i, t in enumerate((reviews, tweets, tweets2)):
        write_run(cache, f"{i + 1}000000000000001", t, "quantum", seed=10 + i)
    runs, _ = load_runs()
    teachers = load_teachers(runs)
    assert {teacher_data_key(t) for t in teachers.values()} == {"1" * 16, "2" * 16}

    tabs = teacher_ablation_tables(runs, teachers)
    assert len(tabs) == 1 and "on dataset " + "2" * 16 in tabs[0].title
    assert sorted(r[0] for r in tabs[0].rows) == ["bloomz-1b1 (" + "b" * 16 + ")", "opt-6.7b (" + "c" * 16 + ")"]
    for t in tabs:  # every teacher in a table has the table's data key
        keys = {teacher_data_key(teachers[row[0].rsplit("(", 1)[1].rstrip(")")]) for row in t.rows}
        assert len(keys) == 1

    md = build(monkeypatch)
    table8 = {title: rows for title, rows in tables(md).items() if title.startswith("Table 8 style")}
    assert len(table8) == 1
    assert not any("a" * 16 in r["Teacher"] for rows in table8.values() for r in rows)


def test_two_caches_of_one_task_on_different_data_are_not_compared(isolated_dirs):
    cache = isolated_dirs / "cache"
    one = teacher(cache, "a" * 16, "1" * 16, seed=1)
    other = teacher(cache, "b" * 16, "2" * 16, model="bloomz-1b1", seed=2)
    write_run(cache, "1000000000000001", one, "quantum", seed=1)
    write_run(cache, "2000000000000001", other, "quantum", seed=2)
    runs, _ = load_runs()
    assert teacher_ablation_tables(runs, load_teachers(runs)) == []


def test_a_teacher_whose_data_is_unknown_is_in_no_teacher_ablation(isolated_dirs):
    cache = isolated_dirs / "cache"
    known = teacher(cache, "a" * 16, "1" * 16, seed=1)
    unknown = teacher(cache, "b" * 16, None, model="bloomz-1b1", seed=2)  # an old manifest without data_key
    write_run(cache, "1000000000000001", known, "quantum", seed=1)
    write_run(cache, "2000000000000001", unknown, "quantum", seed=2)
    runs, _ = load_runs()
    teachers = load_teachers(runs)
    assert teacher_data_key(teachers["b" * 16]) is None
    assert teacher_ablation_tables(runs, teachers) == []
    # the same two teachers on the same data are compared
    m = json.loads((cache / "teacher" / ("b" * 16) / "manifest.json").read_text())
    m["data_key"] = "1" * 16
    (cache / "teacher" / ("b" * 16) / "manifest.json").write_text(json.dumps(m))
    assert len(teacher_ablation_tables(runs, load_teachers(runs))) == 1


def test_teacher_ablation_shows_each_teachers_lora_size_and_distillation_gain(isolated_dirs):
    from test_report_standing import set_accuracy

    cache = isolated_dirs / "cache"
    small = teacher(cache, "a" * 16, "1" * 16, seed=1)
    big = teacher(cache, "b" * 16, "1" * 16, model="gemma3-270m", seed=2)
    write_run(cache, "1000000000000001", small, "quantum", seed=1)
    write_run(cache, "1000000000000002", small, "quantum", seed=2, loss="ce")
    write_run(cache, "2000000000000001", big, "quantum", seed=3)
    set_accuracy(cache, "1000000000000001", (0.76, 0.01), 0.77)
    set_accuracy(cache, "1000000000000002", (0.75, 0.01), 0.76)
    runs, _ = load_runs()
    (tab,) = teacher_ablation_tables(runs, load_teachers(runs))
    rows = {r[0]: dict(zip(tab.headers, r)) for r in tab.rows}
    assert rows[f"smollm2-135m ({'a' * 16})"]["Distillation gain (points)"] == "+1.00"
    assert rows[f"gemma3-270m ({'b' * 16})"]["Distillation gain (points)"] == "—"  # no CE twin on that cache
    assert "quantisation loss" in tab.note


def test_table3_counts_the_offline_ladder_beside_the_papers_teachers():
    from stages.report import build
    from stages.report.tables import parameter_table

    assert {"gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"} <= set(build.LADDER_TEACHERS)
    rows = [{"model": "bloomz-1b1", "lora_trainable_params": 29_500_000, "paper_table3": 29_500_000},
            {"model": "gemma3-270m", "lora_trainable_params": 12_442_880}]
    t = parameter_table(rows, {}, [])
    roles = {r[1]: r[0] for r in t.rows}
    assert roles["bloomz-1b1"].startswith("teacher, paper") and roles["gemma3-270m"].startswith("teacher, offline ladder")
