"""The paper's own result figures, as plain data, and the report tables that show them beside ours.

Source: Lingxiao Li, Yihao Wang, Jiacheng Fan, Jing Li, Sujuan Qin, Qiaoyan Wen, Fei Gao, "Quantum Knowledge
Distillation for Large Language Models", arXiv 2505.13205 (v2 of 1 August 2025), https://arxiv.org/abs/2505.13205.
Its Tables 1-8, numbered as in v2 (``TABLE_NUMBERS``): Table 1 the datasets, Table 2 the simulation, Table 3 the
parameter counts, Tables 4-6 emotion analysis, text hiding (steganalysis) and thematic classification, Table 7 the
loss ablation, Table 8 the teacher ablation.

This module is the one place the paper's figures live. Each table is a ``PaperTable`` with the version and table
number it was read from, the paper's setting for it (dataset, teacher LLMs, qubits, ...) and its cells exactly as
printed (strings: nothing is rounded, rescaled or recomputed; asterisks kept, the paper marks some cells with ``*``
without saying in the table what it means). The cells are the paper-tables transcription that ships with the
authors' data (``qdllm-paper/paper-tables/table<N>.csv``); a test checks them against those files cell by cell
wherever the files are present. Table 3's two blocks (teachers with their LoRA adapters; students with their
proportion of the largest) are one table here, the teachers' proportion cell empty as printed.
"""

from __future__ import annotations

from dataclasses import dataclass

from stages.report.tables import Table

CITATION = "Li et al. 2025, arXiv 2505.13205"
URL = "https://arxiv.org/abs/2505.13205"
PAPER_TASKS = ("emotion", "hiding", "thematic")
PAPER_DATA = {"emotion": "senti", "hiding": "stega", "thematic": "topic"}  # the authors' released data per task
TABLE_NUMBERS = {"datasets": 1, "simulation": 2, "parameters": 3, "emotion": 4, "hiding": 5, "thematic": 6,
                 "loss ablation": 7, "teacher ablation": 8}


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

_TABLE1 = PaperTable(
    number=1, version="v2", subject='datasets',
    setting='the three datasets, split 6:2:2, balanced',
    headers=('dataset', 'texts', 'classes', 'average length', 'tokens'),
    rows=(
        ('Emotion analysis', '24,000', '2', '33.1704', '335,101'),
        ('Hiding detection', '10,000', '2', '10.7992', '53,996'),
        ('Thematic analysis', '20,000', '4', '13.9625', '331,704'),
    ),
)

_TABLE2 = PaperTable(
    number=2, version="v2", subject='simulation',
    setting='the simulation environment',
    headers=('Num of qubits', 'Python version', 'Software development kit', 'Measurement'),
    rows=(
        ('11', '3.8.0', 'mindquantum=0.9.0', 'Z Gate'),
    ),
)

_TABLE3 = PaperTable(
    number=3, version="v2", subject='parameters',
    setting=('the five teacher LLMs with their LoRA r=200 adapters, then the compression baselines and the QD-LLM '
             'student with their proportion of the largest'),
    headers=('model', 'param', 'proportion'),
    rows=(
        ('BLOOMZ-1.1B', '1.1B', ''),
        ('LoRA (BLOOMZ-1.1B)', '29.50M', ''),
        ('BLOOMZ-3B', '3B', ''),
        ('LoRA (BLOOMZ-3B)', '61.46M', ''),
        ('OPT-6.7B', '6.7B', ''),
        ('LoRA (OPT-6.7B)', '104.89M', ''),
        ('LLaMA2-7B', '7B', ''),
        ('LoRA (LLaMA2-7B)', '157.32M', ''),
        ('LLaMA3-8B', '8B', ''),
        ('LoRA (LLaMA3-8B)', '118.00M', ''),
        ('TinyBERT [61]', '14.35M*', '27.49%'),
        ('MiniLLM [19]', '33.36M', '63.91%'),
        ('DistilBERT [14]', '52.20M', '100.00%'),
        ('PKD [62]', '52.20M', '100.00%'),
        ('Ours', '9,275', '0.02%'),
    ),
)

_TABLE4 = PaperTable(
    number=4, version="v2", subject='emotion',
    setting=("emotion analysis on the authors' senti data; five teacher LLMs with LoRA r=200; 11 qubits; each "
             'result the mean of five runs'),
    headers=('teacher', 'method', 'Acc', 'P', 'R', 'F1', 'Acc/Param', 'Acc/Tkd', 'param proportion'),
    rows=(
        ('BLOOMZ-1.1B', 'TinyBERT', '0.7781', '0.7615', '0.7940', '0.7774', '5.42e-8*', '1.17e-3*', ''),
        ('BLOOMZ-1.1B', 'MiniLLM', '0.8110', '0.7945', '0.8267', '0.8103', '2.43e-8', '7.12e-4', ''),
        ('BLOOMZ-1.1B', 'DistilBERT', '0.7542', '0.7351', '0.7678', '0.7511', '1.45e-8', '3.78e-4', ''),
        ('BLOOMZ-1.1B', 'PKD', '0.7661', '0.7492', '0.7821', '0.7653', '1.47e-8', '3.54e-4', ''),
        ('BLOOMZ-1.1B', 'Ours', '0.7802', '0.7654', '0.7956', '0.7809', '8.42e-5', '1.68e-3', ''),
        ('BLOOMZ-3B', 'TinyBERT', '0.7843', '0.7675', '0.8000', '0.7834', '5.47e-8*', '5.26e-4*', ''),
        ('BLOOMZ-3B', 'MiniLLM', '0.8070', '0.7920', '0.8249', '0.8081', '2.42e-8', '5.20e-4', ''),
        ('BLOOMZ-3B', 'DistilBERT', '0.7535', '0.7400', '0.7740', '0.7566', '1.44e-8', '1.90e-4', ''),
        ('BLOOMZ-3B', 'PKD', '0.7701', '0.7529', '0.7856', '0.7689', '1.48e-8', '2.21e-4', ''),
        ('BLOOMZ-3B', 'Ours', '0.7923', '0.7782', '0.8100', '0.7938', '8.54e-5', '1.67e-3', ''),
        ('OPT-6.7B', 'TinyBERT', '0.7943', '0.7805', '0.8094', '0.7947', '5.54e-8*', '5.12e-4*', ''),
        ('OPT-6.7B', 'MiniLLM', '0.8130', '0.7985', '0.8347', '0.8162', '2.44e-8', '3.56e-4', ''),
        ('OPT-6.7B', 'DistilBERT', '0.7591', '0.7420', '0.7755', '0.7584', '1.45e-8', '2.07e-4', ''),
        ('OPT-6.7B', 'PKD', '0.7739', '0.7542', '0.7869', '0.7702', '1.48e-8', '1.99e-4', ''),
        ('OPT-6.7B', 'Ours', '0.8157', '0.7913', '0.8225', '0.8066', '8.79e-5', '1.39e-3', ''),
        ('LLaMA2-7B', 'TinyBERT', '0.7977', '0.7831', '0.8131', '0.7978', '5.56e-8*', '4.99e-4*', ''),
        ('LLaMA2-7B', 'MiniLLM', '0.8136', '0.8020', '0.8388', '0.8200', '2.44e-8', '3.71e-4', ''),
        ('LLaMA2-7B', 'DistilBERT', '0.7622', '0.7440', '0.7792', '0.7612', '1.46e-8', '2.00e-4', ''),
        ('LLaMA2-7B', 'PKD', '0.7805', '0.7620', '0.7985', '0.7798', '1.50e-8', '1.61e-4', ''),
        ('LLaMA2-7B', 'Ours', '0.8105', '0.7965', '0.8308', '0.8133', '8.74e-5', '1.50e-3', ''),
        ('LLaMA3-8B', 'TinyBERT', '0.7946', '0.7855', '0.8130', '0.7990', '5.54e-8*', '4.07e-4*', ''),
        ('LLaMA3-8B', 'MiniLLM', '0.8177', '0.7995', '0.8361', '0.8174', '2.45e-8', '3.68e-4', ''),
        ('LLaMA3-8B', 'DistilBERT', '0.7648', '0.7435', '0.7785', '0.7606', '1.47e-8', '1.67e-4', ''),
        ('LLaMA3-8B', 'PKD', '0.7894', '0.7657', '0.8009', '0.7829', '1.51e-8', '1.62e-4', ''),
        ('LLaMA3-8B', 'Ours', '0.8072', '0.7940', '0.8281', '0.8107', '8.70e-5', '1.42e-3', ''),
        (
            'mean over the five teachers', 'TinyBERT', '0.7898', '0.7756', '0.8059', '0.7905', '5.51e-8*', '6.24e-4*',
            '27.49%*',
        ),
        (
            'mean over the five teachers', 'MiniLLM', '0.8125', '0.7973', '0.8322', '0.8144', '2.44e-8', '4.65e-4',
            '63.91%',
        ),
        (
            'mean over the five teachers', 'DistilBERT', '0.7588', '0.7409', '0.7750', '0.7576', '1.45e-8', '2.28e-4',
            '100.00%',
        ),
        ('mean over the five teachers', 'PKD', '0.7760', '0.7568', '0.7908', '0.7734', '1.49e-8', '2.19e-4', '100.00%'),
        (
            'mean over the five teachers', 'Ours', '0.8012*', '0.7851*', '0.8174*', '0.8011*', '8.64e-5', '1.53e-3',
            '0.02%',
        ),
    ),
)

_TABLE5 = PaperTable(
    number=5, version="v2", subject='hiding',
    setting=("hiding detection on the authors' stega data; five teacher LLMs with LoRA r=200; 11 qubits; each "
             'result the mean of five runs'),
    headers=('teacher', 'method', 'Acc', 'P', 'R', 'F1', 'Acc/Param', 'Acc/Tkd', 'param proportion'),
    rows=(
        ('BLOOMZ-1.1B', 'TinyBERT', '0.7901', '0.7754', '0.8079', '0.7913', '5.51e-8*', '2.35e-3*', ''),
        ('BLOOMZ-1.1B', 'MiniLLM', '0.8140', '0.8010', '0.8397', '0.8199', '2.44e-8', '1.81e-3', ''),
        ('BLOOMZ-1.1B', 'DistilBERT', '0.7687', '0.7593', '0.7918', '0.7752', '1.47e-8', '7.88e-4', ''),
        ('BLOOMZ-1.1B', 'PKD', '0.7785', '0.7621', '0.7705', '0.7791', '1.49e-8', '7.69e-4', ''),
        ('BLOOMZ-1.1B', 'Ours', '0.7933', '0.7833', '0.8143', '0.7985', '8.55e-5', '9.79e-3', ''),
        ('BLOOMZ-3B', 'TinyBERT', '0.7933', '0.7742', '0.8067', '0.7901', '5.53e-8*', '2.36e-3*', ''),
        ('BLOOMZ-3B', 'MiniLLM', '0.8188', '0.7945', '0.8309', '0.8123', '2.45e-8', '1.55e-3', ''),
        ('BLOOMZ-3B', 'DistilBERT', '0.7769', '0.7635', '0.7954', '0.7791', '1.49e-8', '7.45e-4', ''),
        ('BLOOMZ-3B', 'PKD', '0.7833', '0.7635', '0.7720', '0.7807', '1.50e-8', '7.74e-4', ''),
        ('BLOOMZ-3B', 'Ours', '0.8093', '0.7956', '0.8306', '0.8127', '8.73e-5', '9.67e-3', ''),
        ('OPT-6.7B', 'TinyBERT', '0.7953', '0.7837', '0.8155', '0.7993', '5.54e-8*', '1.36e-3*', ''),
        ('OPT-6.7B', 'MiniLLM', '0.8177', '0.8030', '0.8407', '0.8214', '2.45e-8', '1.10e-3', ''),
        ('OPT-6.7B', 'DistilBERT', '0.7876', '0.7655', '0.7978', '0.7813', '1.51e-8', '4.45e-4', ''),
        ('OPT-6.7B', 'PKD', '0.7894', '0.7656', '0.7743', '0.7831', '1.51e-8', '4.47e-4', ''),
        ('OPT-6.7B', 'Ours', '0.8231', '0.8050', '0.8420', '0.8231', '8.87e-5', '8.94e-3', ''),
        ('LLaMA2-7B', 'TinyBERT', '0.7995', '0.7735', '0.8273', '0.7886', '5.50e-8*', '1.52e-3*', ''),
        ('LLaMA2-7B', 'MiniLLM', '0.8217', '0.8090', '0.8506', '0.8293', '2.46e-8', '1.11e-3', ''),
        ('LLaMA2-7B', 'DistilBERT', '0.7759', '0.7640', '0.7956', '0.7795', '1.49e-8', '4.94e-4', ''),
        ('LLaMA2-7B', 'PKD', '0.7851', '0.7651', '0.7738', '0.7826', '1.50e-8', '4.96e-4', ''),
        ('LLaMA2-7B', 'Ours', '0.8201', '0.8051', '0.8419', '0.8231', '8.84e-5', '8.97e-3', ''),
        ('LLaMA3-8B', 'TinyBERT', '0.8007', '0.7862', '0.8157', '0.8021', '5.59e-8*', '1.34e-3*', ''),
        ('LLaMA3-8B', 'MiniLLM', '0.8208', '0.7990', '0.8375', '0.8178', '2.46e-8', '1.09e-3', ''),
        ('LLaMA3-8B', 'DistilBERT', '0.7852', '0.7660', '0.7993', '0.7823', '1.50e-8', '4.41e-4', ''),
        ('LLaMA3-8B', 'PKD', '0.7896', '0.7730', '0.7819', '0.7911', '1.51e-8', '4.39e-4', ''),
        ('LLaMA3-8B', 'Ours', '0.8159', '0.8013', '0.8354', '0.8180', '8.80e-5', '8.84e-3', ''),
        (
            'mean over the five teachers', 'TinyBERT', '0.7958', '0.7786', '0.8146', '0.7943', '5.53e-8*', '1.78e-3*',
            '27.49%*',
        ),
        (
            'mean over the five teachers', 'MiniLLM', '0.8186', '0.8013', '0.8399', '0.8201', '2.45e-8', '1.33e-3',
            '63.91%',
        ),
        (
            'mean over the five teachers', 'DistilBERT', '0.7789', '0.7637', '0.7960', '0.7795', '1.49e-8', '5.82e-4',
            '100.00%',
        ),
        ('mean over the five teachers', 'PKD', '0.7852', '0.7659', '0.7745', '0.7833', '1.50e-8', '5.85e-4', '100.00%'),
        (
            'mean over the five teachers', 'Ours', '0.8123*', '0.7981*', '0.8328*', '0.8151*', '8.76e-5', '9.24e-3',
            '0.02%',
        ),
    ),
)

_TABLE6 = PaperTable(
    number=6, version="v2", subject='thematic',
    setting=("thematic analysis (4 topics) on the authors' topic data; five teacher LLMs with LoRA r=200; 11 "
             'qubits; each result the mean of five runs'),
    headers=('teacher', 'method', 'Acc', 'P', 'R', 'F1', 'Acc/Param', 'Acc/Tkd', 'param proportion'),
    rows=(
        ('BLOOMZ-1.1B', 'TinyBERT', '0.7883', '0.7729', '0.8135', '0.7927', '5.49e-8*', '2.65e-3*', ''),
        ('BLOOMZ-1.1B', 'MiniLLM', '0.8409', '0.8235', '0.8605', '0.8416', '2.52e-8', '1.87e-3', ''),
        ('BLOOMZ-1.1B', 'DistilBERT', '0.7727', '0.7490', '0.7832', '0.7657', '1.48e-8', '8.59e-4', ''),
        ('BLOOMZ-1.1B', 'PKD', '0.7827', '0.7616', '0.7699', '0.7783', '1.50e-8', '8.96e-4', ''),
        ('BLOOMZ-1.1B', 'Ours', '0.8497', '0.8202', '0.8730', '0.8458', '9.16e-5', '6.48e-3', ''),
        ('BLOOMZ-3B', 'TinyBERT', '0.7888', '0.7731', '0.8133', '0.7927', '5.50e-8*', '1.84e-3*', ''),
        ('BLOOMZ-3B', 'MiniLLM', '0.8485', '0.8375', '0.8867', '0.8614', '2.54e-8', '1.65e-3', ''),
        ('BLOOMZ-3B', 'DistilBERT', '0.7627', '0.7520', '0.7864', '0.7688', '1.46e-8', '5.87e-4', ''),
        ('BLOOMZ-3B', 'PKD', '0.7769', '0.7628', '0.7711', '0.7795', '1.49e-8', '5.97e-4', ''),
        ('BLOOMZ-3B', 'Ours', '0.8541', '0.8310', '0.8845', '0.8569', '9.21e-5', '6.13e-3', ''),
        ('OPT-6.7B', 'TinyBERT', '0.7957', '0.7776', '0.8119', '0.7944', '5.54e-8*', '1.43e-3*', ''),
        ('OPT-6.7B', 'MiniLLM', '0.8167', '0.7880', '0.8236', '0.8054', '2.45e-8', '1.12e-3', ''),
        ('OPT-6.7B', 'DistilBERT', '0.7757', '0.7550', '0.7906', '0.7724', '1.49e-8', '4.91e-4', ''),
        ('OPT-6.7B', 'PKD', '0.7803', '0.7655', '0.7741', '0.7828', '1.49e-8', '4.55e-4', ''),
        ('OPT-6.7B', 'Ours', '0.8541', '0.8432', '0.8947', '0.8682', '9.21e-5', '6.09e-3', ''),
        ('LLaMA2-7B', 'TinyBERT', '0.7960', '0.7784', '0.8125', '0.7951', '5.55e-8*', '1.43e-3*', ''),
        ('LLaMA2-7B', 'MiniLLM', '0.8621', '0.8380', '0.8870', '0.8618', '2.58e-8', '1.09e-3', ''),
        ('LLaMA2-7B', 'DistilBERT', '0.7860', '0.7613', '0.7980', '0.7792', '1.51e-8', '4.68e-4', ''),
        ('LLaMA2-7B', 'PKD', '0.7896', '0.7664', '0.7751', '0.7839', '1.51e-8', '4.68e-4', ''),
        ('LLaMA2-7B', 'Ours', '0.8670', '0.8433', '0.8946', '0.8682', '9.35e-5', '3.74e-3', ''),
        ('LLaMA3-8B', 'TinyBERT', '0.7902', '0.7665', '0.8038', '0.7847', '5.51e-8*', '1.35e-3*', ''),
        ('LLaMA3-8B', 'MiniLLM', '0.8630', '0.8245', '0.8842', '0.8533', '2.59e-8', '1.25e-3', ''),
        ('LLaMA3-8B', 'DistilBERT', '0.7782', '0.7650', '0.8054', '0.7847', '1.49e-8', '4.43e-4', ''),
        ('LLaMA3-8B', 'PKD', '0.7915', '0.7680', '0.7767', '0.7855', '1.52e-8', '4.52e-4', ''),
        ('LLaMA3-8B', 'Ours', '0.8654', '0.8357', '0.8885', '0.8613', '9.33e-5', '3.05e-3', ''),
        (
            'mean over the five teachers', 'TinyBERT', '0.7918', '0.7737', '0.8110', '0.7919', '5.52e-8*', '1.74e-3*',
            '27.49%*',
        ),
        (
            'mean over the five teachers', 'MiniLLM', '0.8462*', '0.8223*', '0.8684*', '0.8447*', '2.54e-8',
            '1.40e-3', '63.91%',
        ),
        (
            'mean over the five teachers', 'DistilBERT', '0.7751', '0.7565', '0.7927', '0.7742', '1.49e-8', '5.70e-4',
            '100.00%',
        ),
        ('mean over the five teachers', 'PKD', '0.7842', '0.7649', '0.7734', '0.7820', '1.50e-8', '5.73e-4', '100.00%'),
        ('mean over the five teachers', 'Ours', '0.8581', '0.8347', '0.8871', '0.8601', '9.25e-5', '5.10e-3', '0.02%'),
    ),
)

_TABLE7 = PaperTable(
    number=7, version="v2", subject='loss ablation',
    setting='integrated over the five teachers and the three tasks; 11 qubits',
    headers=('loss', 'Acc', 'F1'),
    rows=(
        ('CE', '0.7388', '0.7401'),
        ('KL', '0.8195*', '0.8217*'),
        ('JS', '0.8156', '0.8209'),
        ('KL+JS+CE (QD-LLM)', '0.8242', '0.8254'),
    ),
)

_TABLE8 = PaperTable(
    number=8, version="v2", subject='teacher ablation',
    setting='the QD-LLM student per teacher LLM and task; 11 qubits',
    headers=('task', 'metric', 'BLOOMZ-1.1B', 'BLOOMZ-3B', 'OPT-6.7B', 'LLaMA2-7B', 'LLaMA3-8B'),
    rows=(
        ('Emotion analysis', 'Acc', '0.7802', '0.7923', '0.8157', '0.8105', '0.8072'),
        ('Emotion analysis', 'P', '0.7654', '0.7782', '0.7913', '0.7965', '0.7940'),
        ('Emotion analysis', 'R', '0.7956', '0.8100', '0.8225', '0.8308', '0.8281'),
        ('Emotion analysis', 'F1', '0.7809', '0.7938', '0.8066', '0.8133', '0.8107'),
        ('Hiding detection', 'Acc', '0.7933', '0.8093', '0.8231', '0.8201', '0.8159'),
        ('Hiding detection', 'P', '0.7833', '0.7956', '0.8050', '0.8051', '0.8013'),
        ('Hiding detection', 'R', '0.8143', '0.8306', '0.8420', '0.8419', '0.8354'),
        ('Hiding detection', 'F1', '0.7985', '0.8127', '0.8231', '0.8231', '0.8180'),
        ('Thematic analysis', 'Acc', '0.8497', '0.8541', '0.8541', '0.8670', '0.8654'),
        ('Thematic analysis', 'P', '0.8202', '0.8310', '0.8432', '0.8433', '0.8357'),
        ('Thematic analysis', 'R', '0.8730', '0.8845', '0.8947', '0.8946', '0.8885'),
        ('Thematic analysis', 'F1', '0.8458', '0.8569', '0.8682', '0.8682', '0.8613'),
        ('Overall', 'Acc', '0.8077', '0.8186', '0.8310', '0.8325', '0.8295'),
        ('Overall', 'P', '0.7896', '0.8016', '0.8132', '0.8150', '0.8103'),
        ('Overall', 'R', '0.8276', '0.8417', '0.8531', '0.8558', '0.8507'),
        ('Overall', 'F1', '0.8084', '0.8211', '0.8326', '0.8349', '0.8300'),
    ),
)

TASK_TABLES: dict[str, PaperTable] = {"emotion": _TABLE4, "hiding": _TABLE5, "thematic": _TABLE6}  # Tables 4-6
DATASETS, SIMULATION, PARAMETERS = _TABLE1, _TABLE2, _TABLE3
LOSS_ABLATION: PaperTable = _TABLE7
TEACHER_ABLATION: PaperTable = _TABLE8
ALL_TABLES = (_TABLE1, _TABLE2, _TABLE3, _TABLE4, _TABLE5, _TABLE6, _TABLE7, _TABLE8)


# ---------------------------------------------------------------- report tables


def paper_table(t: PaperTable) -> Table:
    """A report table of the paper's figures, titled as the paper's numbers in the paper's setting."""
    return Table(title=f"Paper's Table {t.number} ({CITATION}{t.version}): {t.subject}, {t.setting} — "
                       "their numbers, not re-run here",
                 headers=list(t.headers), rows=[list(r) for r in t.rows],
                 note=f"Copied from the paper ({URL}{t.version}, Table {t.number}); its setting differs from ours "
                      "(see 'Differences from the paper's setting').")


def task_table(task: str) -> Table | None:
    """The paper's results table for one of its tasks; None for another task or one not recorded."""
    t = TASK_TABLES.get(task)
    return paper_table(t) if t is not None else None


def task_markdown(task: str) -> list[str]:
    """Report lines after our Table 4–6 for ``task``: the paper's table, or nothing when the task is not one of the
    paper's."""
    t = task_table(task)
    return [] if t is None else [t.markdown(), ""]


def ablation_markdown() -> list[str]:
    """Report lines beside our Table 7 and 8 style ablations: the paper's loss and teacher ablations."""
    return [paper_table(LOSS_ABLATION).markdown(), "", paper_table(TEACHER_ABLATION).markdown(), ""]


def setting_markdown() -> list[str]:
    """Report lines beside our data and simulation facts and our parameter table: the paper's Tables 1, 2 and 3."""
    return [paper_table(t).markdown() for t in (DATASETS, SIMULATION, PARAMETERS)] + [""]
