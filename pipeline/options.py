"""Command-line options shared by ``qdllm key`` and the stage commands, so both build identical configs."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

Task = Annotated[str, typer.Option("--task", "-t", help="emotion | hiding | thematic | a name for your own data.")]
Source = Annotated[str, typer.Option("--source", help="Data: '' = task default, a file/dir path, or hf:NAME.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for the data split and the teacher fine-tune.")]
MaxPerClass = Annotated[int, typer.Option("--max-per-class", help="Cap examples per class after balancing (0 = all).")]
TextColumn = Annotated[str, typer.Option("--text-column", help="Text column of your own CSV/Parquet/JSONL.")]
LabelColumn = Annotated[str, typer.Option("--label-column", help="Label column of your own CSV/Parquet/JSONL.")]

Model = Annotated[str, typer.Option("--model", "-m", help="smollm2-135m (offline default), a short name, hub id or local dir.")]
Revision = Annotated[str, typer.Option("--revision", help="Hub revision of the model.")]
Quantize = Annotated[str, typer.Option("--quantize", help="none | 8bit | 4bit (bitsandbytes, needs CUDA).")]
Embedder = Annotated[str, typer.Option("--embedder", help="minilm (offline default) | teacher-input | hub id | local dir.")]
Profile = Annotated[str, typer.Option("--profile", help="auto | cpu | gpu: fine-tune settings (auto = gpu when CUDA is present).")]
LoraR = Annotated[Optional[int], typer.Option("--lora-r", help="LoRA rank (paper: 200).")]
TeacherEpochs = Annotated[Optional[int], typer.Option("--teacher-epochs", help="Fine-tune epochs (default: profile).")]
MaxTrain = Annotated[Optional[int], typer.Option("--max-train-examples", help="Cap fine-tune examples (0 = all; default: profile).")]
MaxLength = Annotated[Optional[int], typer.Option("--max-length", help="Max tokens per text (default: profile).")]

StudentModel = Annotated[str, typer.Option("--student-model", help="quantum | logreg | mlp.")]
Variant = Annotated[str, typer.Option("--variant", help="Circuit: paper | reference | u3.")]
Qubits = Annotated[int, typer.Option("--qubits", help="Number of qubits n.")]
Layers = Annotated[int, typer.Option("--layers", help="Ansatz layers L.")]
Loss = Annotated[str, typer.Option("--loss", help="ce | kl | js | kl+js+ce.")]
Alpha = Annotated[float, typer.Option("--alpha", help="Guidance weight α of the distillation terms.")]
Temperature = Annotated[float, typer.Option("--temperature", help="Distillation temperature T on the teacher logits.")]
StudentLr = Annotated[float, typer.Option("--lr", help="Adam learning rate.")]
StudentEpochs = Annotated[int, typer.Option("--epochs", help="Training epochs.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Batch size.")]
Seeds = Annotated[str, typer.Option("--seeds", help="Comma-separated seeds, one fresh initialisation each.")]
InputScaling = Annotated[str, typer.Option("--input-scaling", help="l2 (unit-norm embeddings) | none | minmax10 (the authors' per-example [0, 10] scaling).")]


def parse_seeds(text: str) -> tuple[int, ...]:
    from pipeline.errors import QdllmError

    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise QdllmError(f"--seeds {text!r} is not a comma-separated list of integers, e.g. 0,1,2,3,4.") from None
    if not seeds:
        raise QdllmError("--seeds needs at least one seed, e.g. 0,1,2,3,4.")
    return seeds


def data_config(task: str = "emotion", source: str = "", seed: int = 0, max_per_class: int = 0,
                text_column: str = "text", label_column: str = "label"):
    from pipeline.config import DataConfig

    return DataConfig(task=task, source=source, seed=seed, max_per_class=max_per_class,
                      text_column=text_column, label_column=label_column)


def teacher_config(model: str = "smollm2-135m", revision: str = "main", quantize: str = "none",
                   embedder: str = "minilm", profile: str = "auto", seed: int = 0, lora_r: int | None = None,
                   epochs: int | None = None, max_train_examples: int | None = None, max_length: int | None = None):
    from pipeline.config import TeacherConfig
    from pipeline.errors import QdllmError

    if quantize not in ("none", "8bit", "4bit"):
        raise QdllmError(f"--quantize {quantize!r} is not one of none, 8bit, 4bit.")
    return TeacherConfig.for_profile(
        profile, model=model, revision=revision, quantize=quantize, embedder=embedder, seed=seed,
        lora_r=lora_r, epochs=epochs, max_train_examples=max_train_examples, max_length=max_length,
    )


def student_config(student_model: str = "quantum", variant: str = "paper", qubits: int = 11, layers: int = 2,
                   loss: str = "kl+js+ce", alpha: float = 0.9, temperature: float = 1.0, lr: float = 0.06,
                   epochs: int = 10, batch_size: int = 8, seeds: str = "0,1,2,3,4", input_scaling: str = "l2"):
    from pipeline.config import StudentConfig

    return StudentConfig(model=student_model, variant=variant, n_qubits=qubits, n_layers=layers, loss=loss,
                         alpha=alpha, temperature=temperature, lr=lr, epochs=epochs, batch_size=batch_size,
                         seeds=parse_seeds(seeds), input_scaling=input_scaling)
