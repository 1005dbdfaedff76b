"""Assemble ``cache/reports/<key>/``: report.md, PNG figures and circuit diagrams, published atomically.

The key digests every input of the report (each run's manifest and metrics, each teacher
manifest, the report and teacher code), so an unchanged set of runs reuses the finished
report and a new run gives a new one. Nothing is trained here; the only outside call is
``qdllm teacher params`` in a subprocess (the paper teachers' LoRA counts need torch,
which this process never imports).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline import keys, paths
from pipeline.config import SCHEMA_VERSION, SourceSpec, StudentConfig, code_hash, has_gpu
from pipeline.console import progress
from pipeline.errors import QdllmError
from pipeline.models import PACKAGED_MODELS
from pipeline.publish import MANIFEST, is_complete, key_lock, publish_dir
from stages.report import paper as P
from stages.report.compression import compression_section
from stages.report import tables as T
from stages.report.distill import distillation_section
from stages.report.standing import standing_section
from stages.report.runs import (METRICS, NOISE, NoiseEval, Run, Teacher, file_digest, load_noise, load_runs,
                                load_teachers)

log = logging.getLogger(__name__)

PAPER_TEACHERS = ("bloomz-1b1", "bloomz-3b", "opt-6.7b", "llama2-7b", "llama3-8b")
# counted beside them in Table 3: the offline teachers, the packaged ladder (pipeline.models.PACKAGED_MODELS)
LADDER_TEACHERS = tuple(PACKAGED_MODELS)
PAPER_SOURCES = {"emotion": "Sentiment140-style tweets", "hiding": "cover/stego tweets",
                 "thematic": "AG News descriptions"}
REPORT = "report.md"


def reports_dir() -> Path:
    return paths.cache_dir() / "reports"


# ---------------------------------------------------------------- key


def report_inputs(runs: list[Run], teachers: dict[str, Teacher], paper_teachers: bool,
                  noise: list[NoiseEval] | None = None) -> dict[str, Any]:
    """Everything that decides the report's content."""
    tdir = paths.cache_dir() / "teacher"
    return {
        "stage": "report",
        "schema": SCHEMA_VERSION,
        "runs": {r.key: {"manifest": file_digest(r.path / MANIFEST), "metrics": file_digest(r.path / METRICS),
                         "circuit": file_digest(r.path / "circuit.svg")} for r in runs},
        "teachers": {k: file_digest(tdir / k / MANIFEST) for k in sorted(teachers)},
        "datasets": {k: file_digest(p / MANIFEST) if p else None
                     for k, p in sorted((k, _dataset_dir(t)) for k, t in teachers.items())},
        "paper_teachers": paper_teachers,
        "noise": {e.key: file_digest(e.path / NOISE) for e in noise or []},
        "code": code_hash("report"),
        # the paper teachers' LoRA counts come from `qdllm teacher params`: they change when its code does
        "teacher_params_code": code_hash("teacher-params") if paper_teachers else None,
    }


def _dataset_dir(t: Teacher) -> Path | None:
    data_key = (t.manifest or {}).get("data_key") or ((t.manifest or {}).get("inputs") or {}).get("data_key")
    task = (t.manifest or {}).get("task")
    return paths.dataset_dir(task, data_key) if data_key and task else None


# ---------------------------------------------------------------- paper teachers


def paper_teacher_params(models: tuple[str, ...] = PAPER_TEACHERS + LADDER_TEACHERS, timeout: float = 300) -> tuple[list[dict], str]:
    """LoRA counts of the paper's teachers from ``qdllm teacher params --json`` (a subprocess: torch stays out)."""
    out: list[dict] = []
    with progress() as bar:
        task = bar.add_task("counting LoRA parameters of the paper's teachers", total=len(models))
        for m in models:
            info, why = _teacher_params(m, timeout)
            if info is None:
                log.warning("`qdllm teacher params --model %s` failed (%s); the paper teachers are left out", m, why)
                return [], f"The paper teachers' LoRA counts are left out: `qdllm teacher params --model {m}` failed ({why})."
            out.append(info)
            bar.advance(task)
    return out, ""


def _teacher_params(model: str, timeout: float) -> tuple[dict | None, str]:
    """One ``qdllm teacher params --json`` call: (its JSON, "") or (None, why it failed)."""
    cmd = [sys.executable, "-m", "stages.cli", "-q", "teacher", "params", "--model", model, "--json"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=paths.PROJECT_ROOT)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, type(e).__name__
    line = next((ln for ln in reversed(p.stdout.splitlines()) if ln.strip().startswith("{")), "")
    try:
        info = json.loads(line) if p.returncode == 0 and line else None
    except ValueError:
        info = None
    if not info or not info.get("lora_trainable_params"):
        tail = (p.stderr.strip().splitlines() or [f"exit code {p.returncode}"])[-1].strip()
        return None, tail[:200]
    return info, ""


# ---------------------------------------------------------------- text sections


def _device_text(d: Any) -> str:
    if d is None:
        return "not recorded"
    if isinstance(d, dict):
        return ", ".join(f"{k}: {v}" for k, v in d.items())
    return str(d)


def hardware_section(runs: list[Run], teachers: dict[str, Teacher]) -> list[str]:
    lines = ["## Hardware", ""]
    for t in teachers.values():
        lines.append(f"- Teacher {t.name} (cache {t.key}): {_device_text((t.manifest or {}).get('device'))}.")
    hosts = {}
    for r in runs:
        d = r.metrics.get("device") or r.manifest.get("device") or r.manifest.get("hardware")
        if d is not None:
            hosts.setdefault(_device_text(d), []).append(r.key)
    for text, ks in hosts.items():
        lines.append(f"- Student runs {', '.join(ks)}: {text}.")
    if not hosts:
        lines.append("- Student runs: the runs do not record their machine; they are CPU simulations "
                     "(MindQuantum circuit definition, fused NumPy state-vector training).")
    lines.append(f"- This report was built on {platform.platform()} ({platform.machine()}), "
                 f"{os.cpu_count()} CPU cores, {'a CUDA GPU' if has_gpu() else 'no GPU'}, Python "
                 f"{platform.python_version()}.")
    return lines


def data_section(teachers: dict[str, Teacher]) -> list[str]:
    lines = ["## Data and teachers", ""]
    for t in sorted(teachers.values(), key=lambda x: ((x.manifest or {}).get("task", ""), x.key)):
        m = t.manifest or {}
        rows = ", ".join(f"{s} {info.get('rows')}" for s, info in (m.get("files") or {}).items())
        src = _source_text(t)
        cfg = t.config
        lines.append(f"- **{m.get('task', '?')}** — teacher cache `{t.key}`: teacher **{t.name}** "
                     f"(LoRA r={cfg.get('lora_r', '?')}, profile {cfg.get('profile', '?')}, "
                     f"{cfg.get('epochs', '?')} epoch(s), max length {cfg.get('max_length', '?')} tokens), "
                     f"frozen embeddings from **{t.embedder}** ({m.get('embedding_source', '?')}, "
                     f"dim {m.get('embedding_dim', '?')}). Classes: {', '.join(m.get('class_names') or [])}. "
                     f"Data: {src}; rows {rows or 'not recorded'}. Teacher accuracy: validation "
                     f"{T.pct(t.metric('val', 'accuracy'))} %, test {T.pct(t.metric('test', 'accuracy'))} %.")
        if not t.manifest:
            lines.append(f"  (The cache {t.key} is not on this machine: the teacher's name and metrics come from "
                         "its student runs.)")
    return lines


def _source_text(t: Teacher) -> str:
    d = _dataset_dir(t)
    m = {}
    if d and (d / MANIFEST).is_file():
        try:
            m = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
        except ValueError:
            m = {}
    src = (m.get("inputs") or {}).get("source") or {}
    spec = SourceSpec.from_identity(src)
    if spec is not None:
        return spec.display
    key = (t.manifest or {}).get("data_key") or ((t.manifest or {}).get("inputs") or {}).get("data_key")
    return f"dataset `{key}` (its manifest is not on this machine)" if key else "not recorded"


def differences_section(runs: list[Run], teachers: dict[str, Teacher]) -> list[str]:
    """How this setting differs from the paper's, in plain words, from what the manifests say."""
    lines = ["## Differences from the paper's setting", ""]
    names = sorted({t.name for t in teachers.values()} - {"unknown teacher"})
    paper_like = [n for n in names if any(p.split("-")[0] in n.lower() for p in PAPER_TEACHERS)]
    if set(names) - set(paper_like):
        lines.append(f"- Teacher LLM: {', '.join(sorted(set(names) - set(paper_like)))} instead of the paper's "
                     "BLOOMZ-1.1B/3B, OPT-6.7B, LLaMA2-7B and LLaMA3-8B (which need a GPU and a model hub).")
    embedders = sorted({t.embedder for t in teachers.values()} - {"unknown embedder"})
    if any("bert" not in e.lower() for e in embedders):
        dims = sorted({str((t.manifest or {}).get("embedding_dim", "?")) for t in teachers.values()})
        lines.append(f"- Student input: frozen embeddings from {', '.join(embedders)} (dim {', '.join(dims)}) "
                     "instead of the paper's BERT-base hidden state (dim 768).")
    for t in teachers.values():
        cfg = t.config
        caps = (t.manifest or {}).get("caps") or {}
        if cfg.get("profile") == "cpu":
            used = (f"; it saw {caps['fine_tune_examples']} examples" if caps.get("fine_tune_examples") else "")
            cut = (f", {100 * caps['truncated_fraction']:.0f} % of texts were longer and cut"
                   if caps.get("truncated_fraction") else "")
            lines.append(f"- Teacher {t.name} ({t.key}) was fine-tuned with the CPU profile: {cfg.get('epochs')} "
                         f"epoch(s), texts cut to {cfg.get('max_length')} tokens{cut}, at most "
                         f"{cfg.get('max_train_examples') or 'all'} training examples{used} — far less than a GPU "
                         "fine-tune, so the teacher is weaker than the paper's.")
        exported, rows = caps.get("exported_rows") or {}, caps.get("dataset_rows") or {}
        if exported and rows and exported != rows:
            lines.append(f"- Teacher cache {t.key} exports a subset of the dataset: "
                         + ", ".join(f"{s} {exported.get(s)} of {rows.get(s)}" for s in rows) + " rows.")
        if cfg.get("lora_r") not in (None, 200):
            lines.append(f"- Teacher {t.name} ({t.key}) uses LoRA rank {cfg['lora_r']} instead of 200.")
    for t in teachers.values():
        task = (t.manifest or {}).get("task")
        src = _source_text(t)
        if task in PAPER_SOURCES and "default source" in src:
            lines.append(f"- Data for {task}: {src} instead of the paper's {PAPER_SOURCES[task]}.")
    default = StudentConfig()
    seen = set()
    for r in runs:
        cfg = r.config
        if len(r.seeds) != len(default.seeds) and ("seeds", len(r.seeds)) not in seen:
            seen.add(("seeds", len(r.seeds)))
            lines.append(f"- Some runs use {len(r.seeds)} seed(s) instead of the paper's {len(default.seeds)} "
                         f"(e.g. {r.key}).")
        if r.model == "quantum" and cfg.get("variant") == "reference" and "ref" not in seen:
            seen.add("ref")
            lines.append("- Variant `reference` follows the authors' released code gate by gate (three RY and "
                         "three RZ per qubit); `paper` uses the paper's unified rotations.")
        if r.model == "quantum" and cfg.get("epochs") not in (None, default.epochs) and "ep" not in seen:
            seen.add("ep")
            lines.append(f"- Some quantum runs train {cfg.get('epochs')} epochs instead of {default.epochs} "
                         f"(e.g. {r.key}).")
    lines.append("- The quantum circuit is simulated exactly on a CPU (state vector); there is no quantum "
                 "hardware or shot noise. Logistic-regression and MLP students are not in the paper: they are "
                 "classical baselines trained from the same cache with the same loss and selection rule.")
    return lines


# ---------------------------------------------------------------- the report


def _circuits(main: dict[tuple[str, str], list[Run]], out: Path) -> dict[str, str]:
    files = {}
    for rs in main.values():
        for r in rs:
            svg = r.path / "circuit.svg"
            if r.model == "quantum" and svg.is_file():
                name = f"circuit-{r.key}.svg"
                shutil.copyfile(svg, out / name)
                files[r.key] = name
    return files


def _preamble(runs: list[Run], teachers: dict[str, Teacher], skipped: list[str], key: str) -> list[str]:
    """The report's title and the sentence saying where its numbers come from (and which runs were skipped)."""
    md = [f"# QD-LLM report `{key}`", "",
          f"Built {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from {len(runs)} student run(s) on "
          f"{len(teachers)} teacher cache(s) under `{paths.cache_dir() / 'student'}`. All numbers are read from "
          "the runs' `metrics.json` and the teacher manifests; run keys in the last column name the source "
          "directory `cache/student/<key>/`. Percentages are on the test split; the checkpoint of each seed "
          "was chosen on validation. See docs/report.md for how to read this report.", ""]
    if skipped:
        md += ["Skipped (incomplete or unreadable) runs: " + "; ".join(skipped) + ".", ""]
    return md


def results_section(main: dict[tuple[str, str], list[Run]], teachers: dict[str, Teacher], circuits: dict[str, str],
                    in_comparison: set[str]) -> list[str]:
    """"Results per task and teacher": the Table 4–6 style table (then the paper's own, unless the comparison
    section showed it), the cost table, the figures drawn for it and the circuits."""
    md = ["## Results per task and teacher", ""]
    for (task, tkey), rs in main.items():
        stem = f"{task}-{tkey}"
        md += [T.performance_table(task, teachers[tkey], rs).markdown(), "",
               *([] if task in in_comparison else P.task_markdown(task)),  # the paper's Table 4/5/6, once
               T.timing_table(rs, f"{task}, teacher cache {tkey}").markdown(), "",
               f"![Training curves](curves-{stem}.png)", "",
               f"![Confusion matrices](confusion-{stem}.png)", "",
               f"![Training and inference time](timing-{stem}.png)", ""]
        for r in rs:
            if r.key in circuits:
                md += [f"Circuit of {r.label} (run {r.key}): ![circuit]({circuits[r.key]})", ""]
    return md


def write_report(out: Path, runs: list[Run], teachers: dict[str, Teacher], paper: list[dict], paper_note: str,
                 skipped: list[str], key: str, noise: list[NoiseEval] | None = None) -> list[str]:
    """Write report.md and every figure into ``out``; return the file names written."""
    from stages.report import figures as F

    main = T.main_runs(runs)
    written: list[str] = []
    jobs = []  # (callable, args) so the progress bar knows the total
    for (task, tkey), rs in main.items():
        stem = f"{task}-{tkey}"
        title = f"{task}, teacher {teachers[tkey].name} ({tkey})"
        jobs += [(F.training_curves, (rs, out, f"curves-{stem}.png", f"Training curves: {title}")),
                 (F.confusion_matrices, (rs, out, f"confusion-{stem}.png", f"Test confusion matrices: {title}")),
                 (F.timings, (rs, out, f"timing-{stem}.png", f"Cost per method: {title}"))]
    jobs.append((F.accuracy_vs_params, (T.params_panels(runs), teachers, out, "accuracy-vs-params.png")))
    if noise:
        jobs.append((F.accuracy_vs_shots, (noise, {r.key: r.label for r in runs}, out, "accuracy-vs-shots.png")))
    with progress() as bar:
        t = bar.add_task("drawing figures", total=len(jobs))
        for fn, args in jobs:
            written.append(fn(*args))
            bar.advance(t)
    circuits = _circuits(main, out)
    written += list(circuits.values())

    md = _preamble(runs, teachers, skipped, key)
    standing, figures = standing_section(runs, teachers, out)
    md += standing
    written += figures
    md += distillation_section(runs, teachers)
    compared, figures, in_comparison = compression_section(runs, teachers, out)
    md += compared
    written += figures
    md += data_section(teachers) + [""] + hardware_section(runs, teachers) + [""]
    md += ["The paper's setting, beside ours above (its Tables 1 and 2) and below (its Table 3):", ""]
    md += P.setting_markdown()
    md += differences_section(runs, teachers) + [""]

    md += ["## Trainable parameters", "", T.parameter_table(paper, teachers, runs).markdown(), ""]
    if paper_note:
        md += [paper_note, ""]

    md += results_section(main, teachers, circuits, in_comparison)
    md += ["## Accuracy against trainable parameters", "", "![Accuracy vs parameters](accuracy-vs-params.png)", ""]
    md += ["## Shots and noise", ""]
    if noise:
        md += ["What the quantum students would score on a device that estimates each ⟨Z_i⟩ from a finite number "
               "of shots, without and with gate and readout noise (`qdllm student noise`, docs/noise.md).", "",
               "![Accuracy against shots](accuracy-vs-shots.png)", "", T.shots_table(noise, runs).markdown(), ""]
    else:
        md += ["No shot or noise evaluations yet; `qdllm student noise --run KEY` makes them (docs/noise.md).", ""]
    cost = T.device_cost_table(runs)
    md += ["### What training on hardware would cost", ""]
    md += ([cost.markdown(), ""] if cost else
           ["No quantum run records a device cost yet (runs trained before the cost model); retrain with "
            "`make student` (docs/student.md, training as a device would).", ""])

    ablations = (T.loss_ablation_tables(runs, teachers), T.teacher_ablation_tables(runs, teachers),
                 T.size_ablation_tables(runs, teachers))
    md += ["## Ablations", ""]
    if not any(ablations):
        md += ["No ablation runs yet (runs differing only in loss, teacher, or qubits/layers); "
               "`make ablations` trains them.", ""]
    for group in ablations:
        for tab in group:
            md += [tab.markdown(), ""]
    md += P.ablation_markdown()  # the paper's own Tables 7 and 8 beside ours
    (out / REPORT).write_text("\n".join(md), encoding="utf-8")
    return [REPORT, *written]


def build_report(paper_teachers: bool = True, force: bool = False) -> Path:
    """Build (or reuse) the report over every complete student run; returns the path of report.md."""
    runs, skipped = load_runs()
    if not runs:
        raise QdllmError(f"No finished student runs under {paths.cache_dir() / 'student'}; run `make student` first.")
    teachers = load_teachers(runs)
    noise = load_noise(runs)
    inputs = report_inputs(runs, teachers, paper_teachers, noise)
    full = keys.digest(inputs)
    final = reports_dir() / keys.short(full)
    with key_lock(final):
        if is_complete(final) and not force:
            log.info("the report over these %d run(s) is up to date: %s", len(runs), final)
            return final / REPORT
        paper, note = paper_teacher_params() if paper_teachers else ([], "The paper teachers' LoRA counts were "
                                                                          "not requested (--no-paper-teachers).")
        with publish_dir(final) as pub:
            files = write_report(pub.path, runs, teachers, paper, note, skipped, keys.short(full), noise)
            pub.manifest = {"schema_version": SCHEMA_VERSION, "kind": "report", "key": full, "inputs": inputs,
                            "files": files, "runs": [r.key for r in runs],
                            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    log.info("wrote the report over %d run(s) to %s", len(runs), final)
    return final / REPORT
