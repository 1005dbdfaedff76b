"""Count LoRA trainable parameters from an architecture config alone (meta device: no weights, no memory).

The configs of the paper's five teachers ship in ``configs/``, so ``qdllm teacher params``
reproduces the paper's Table 3 offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.errors import QdllmError
from pipeline.models import MODEL_ALIASES, PACKAGED_MODELS
from stages.teacher.model import CONFIG_DIR, lora_targets

# Paper, Table 3: LoRA trainable parameters at r = 200.
PAPER_TABLE3: dict[str, float] = {"bloomz-1b1": 29.50e6, "bloomz-3b": 61.46e6, "opt-6.7b": 104.89e6,
                                  "llama2-7b": 157.32e6, "llama3-8b": 118.00e6}


def load_config(name: str):
    """Architecture config of a shipped short name, a local directory or (online / cached) hub id."""
    from transformers import AutoConfig

    shipped = CONFIG_DIR / f"{name}.json"
    if shipped.is_file():
        return AutoConfig.for_model(**_config_dict(shipped))
    if Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise QdllmError(f"The directory {name} has no config.json; point at a directory saved with save_pretrained.")
        return AutoConfig.from_pretrained(name)
    hub_id = MODEL_ALIASES.get(name, name)
    if "/" not in hub_id:
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
        raise QdllmError(f"No architecture config for {name!r}: use one of {', '.join(known)}, a local directory or a hub id.")
    from stages.lm.models import working_offline

    offline = working_offline()
    try:
        return AutoConfig.from_pretrained(hub_id, local_files_only=offline)
    except OSError:
        raise QdllmError(
            f"The config of {hub_id!r} is not available offline; use one of the shipped configs "
            f"({', '.join(sorted(p.stem for p in CONFIG_DIR.glob('*.json')))}) or a local directory."
        ) from None


def _config_dict(path: Path) -> dict[str, Any]:
    d = json.loads(path.read_text())
    return {k: v for k, v in d.items() if not k.startswith("_") and k not in ("architectures", "transformers_version")}


def count_lora_params(name: str, r: int = 200, num_labels: int = 2, alpha: int | None = None) -> dict[str, Any]:
    """Build the SEQ_CLS model with LoRA on the meta device and count what is trainable."""
    from stages.lm.models import quiet_libraries

    quiet_libraries()
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    config = load_config(name)
    config.num_labels = num_labels
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = 0
    targets = lora_targets(config.model_type)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=r, lora_alpha=alpha or 2 * r,
                                                 target_modules=targets))
    lora = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" in n)
    head = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n)
    total = sum(p.numel() for p in model.parameters())
    out = {"model": name, "model_type": config.model_type, "lora_r": r, "target_modules": targets,
           "num_labels": num_labels, "lora_params": lora, "head_params": head,
           "lora_trainable_params": lora + head, "total_params": total}
    short = name if name in PAPER_TABLE3 else next((k for k, v in MODEL_ALIASES.items() if v == name), None)
    if short in PAPER_TABLE3:
        out["paper_table3"] = PAPER_TABLE3[short]
    return out


def known_models() -> list[str]:
    return sorted({p.stem for p in CONFIG_DIR.glob("*.json")} | set(PACKAGED_MODELS))
