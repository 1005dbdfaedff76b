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
            f"Mistral- or Qwen-family model ({', '.join(sorted(LORA_TARGETS))})."
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
                    precision: str = "bf16"):
    """The LLM with a sequence-classification head reading the last non-pad token (C outputs)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    check_quantize(quantize)
    device, dtype = device_and_dtype(precision)
    kwargs = {"num_labels": num_labels, "dtype": dtype}
    if quantize != "none":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
            if quantize == "4bit" else BitsAndBytesConfig(load_in_8bit=True)
        )
        kwargs["device_map"] = {"": 0}
    torch.manual_seed(seed)  # the head is freshly initialised: make it reproducible
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, **kwargs)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if quantize == "none":
        model.to(device)
    return model


def add_lora(model, *, r: int, alpha: int, dropout: float, quantize: str = "none", seed: int = 0):
    """LoRA on the family's attention projections, task type SEQ_CLS (the head stays trainable)."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    if quantize != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
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
