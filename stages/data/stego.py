"""Language-model steganography: hide bits in fluent text with arithmetic coding, and get them back.

At each step the causal LM's next-token distribution is truncated (top-k and/or nucleus,
minus line ends, special tokens and tokens that would not survive retokenisation), quantised
to integer frequencies, and the arithmetic coder in ``stego_coder`` picks the token that the
secret bits point at. Decoding replays the same steps on the retokenised text. Both sides
must use the same model, prompt and settings on the same kind of machine (see docs/stego.md).

``generate_stego_texts`` makes the hiding task's stego corpus from random bits, batched with
a shared few-shot prompt in the KV cache, resumable, with lengths drawn from the covers'.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import QdllmError
from stages.data.stego_coder import ArithmeticCoder, frame, quantise, unframe

log = logging.getLogger(__name__)

# Written for this project: short, tweet- and headline-like lines as in-context examples.
DEFAULT_PROMPT = (
    "Just got back from the beach and I am so tired but happy\n"
    "City council approves new budget for road repairs\n"
    "can't believe it's raining again, my plans are ruined\n"
    "Local team wins championship after dramatic final minutes\n"
)


@dataclass(frozen=True)
class StegoSettings:
    """Everything both sides must share (besides the model weights) to hide and recover bits."""

    model: str = "smollm2-135m"
    top_k: int | None = 64  # keep the k most probable tokens (None: no limit but top_p's)
    top_p: float | None = None  # nucleus: keep the smallest set with this much probability
    precision: int = 32  # bits of the arithmetic coder's interval
    freq_bits: int = 16  # quantised frequencies sum to 2**freq_bits
    dtype: str = "float32"
    prompt: str = DEFAULT_PROMPT
    max_tokens: int = 256  # cap on generated tokens per text
    canonical: bool = True  # keep only tokens that retokenise identically (needed to decode)
    threads: int = 1  # torch CPU threads; fixed so float results repeat (1 is also fastest on a busy 2-core box)

    def check(self) -> None:
        if self.top_k is None and self.top_p is None:
            raise QdllmError("Give --top-k or --top-p (or both) so the next-token distribution is truncated.")
        if not 16 <= self.precision <= 62 or not 8 <= self.freq_bits <= self.precision - 2:  # before --top-k's range
            raise QdllmError(f"--freq-bits {self.freq_bits} with --precision {self.precision} is not valid: "
                             "--precision must be 16..62 and --freq-bits from 8 to precision - 2 (default 32 and 16).")
        if not 1 <= self.threads <= 1024:
            raise QdllmError(f"--threads {self.threads} is not valid: give 1 to 1024 (both sides must match).")
        if self.top_k is not None and not 2 <= self.top_k <= (1 << self.freq_bits) // 2:
            raise QdllmError(f"--top-k must be between 2 and {(1 << self.freq_bits) // 2}; got {self.top_k}.")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise QdllmError(f"--top-p must be in (0, 1]; got {self.top_p}.")
        if self.dtype not in _DTYPES:
            raise QdllmError(f"--dtype must be one of {', '.join(_DTYPES)}; got {self.dtype!r}.")


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_TOP_P_CAP = 1024  # most candidates a nucleus may hold


class LanguageModel:
    """A causal LM with its tokenizer and the per-token facts the coder needs (allowed, starts a word)."""

    def __init__(self, model, tokenizer):
        self.model = model.eval()
        self.tokenizer = tokenizer
        vocab = len(tokenizer)
        self.size = int(model.get_output_embeddings().weight.shape[0])
        texts = [tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in range(vocab)]
        texts += [""] * (self.size - vocab)
        self.texts = texts
        special = set(tokenizer.all_special_ids)
        ok = [
            i not in special and t != "" and t.strip() != "" and "\n" not in t and "\r" not in t
            and t.isprintable() and not t[-1].isspace()
            for i, t in enumerate(texts)
        ]
        self.allowed = torch.tensor(ok)
        lead = torch.tensor([t[:1].isspace() for t in texts])
        self.allowed_first = self.allowed & ~lead  # a text does not start with a space
        self.starts_space = lead.numpy()
        ends = [i for i, t in enumerate(texts) if "\n" in t or "\r" in t] + list(special)
        self.line_end = torch.zeros(self.size, dtype=torch.bool)
        self.line_end[ends] = True

    @classmethod
    def load(cls, name: str, dtype: str = "float32") -> "LanguageModel":
        """Load a packaged name, local directory or hub id through the teacher stage's resolver."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from stages.lm.models import resolve_model_dir

        path = resolve_model_dir(name)
        tokenizer = AutoTokenizer.from_pretrained(path)
        # eager attention: for one query token per step it beats CPU SDPA (5x in bfloat16, 1.5x in float32)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[dtype], attn_implementation="eager")
        return cls(model, tokenizer)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, clean_up_tokenization_spaces=False)


_LOADED: dict[tuple[str, str], LanguageModel] = {}


def load_lm(name: str, dtype: str = "float32") -> LanguageModel:
    """The language model for ``name``, loaded once per process."""
    key = (name, dtype)
    if key not in _LOADED:
        _LOADED[key] = LanguageModel.load(name, dtype)
    return _LOADED[key]


# ---------------------------------------------------------------- one step of the distribution


def _candidates(lm: LanguageModel, logits: torch.Tensor, first: bool, s: StegoSettings):
    """Per row: candidate token ids (most probable first) and their float64 probabilities."""
    mask = lm.allowed_first if first else lm.allowed
    logits = logits.float().masked_fill(~mask[: logits.shape[-1]], float("-inf"))
    cap = s.top_k if s.top_k is not None else _TOP_P_CAP
    vals, ids = torch.topk(logits, min(cap, int(mask.sum())), dim=-1)
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    probs = torch.exp((vals - lse).double()).numpy()
    ids = ids.numpy()
    rows = []
    for r in range(len(ids)):
        n = len(ids[r])
        if s.top_p is not None:
            n = min(n, int(np.searchsorted(np.cumsum(probs[r]), s.top_p)) + 1)
        rows.append((ids[r][:n], probs[r][:n]))
    return rows


def _canonical(lm: LanguageModel, prefix: list[int], ids: np.ndarray, probs: np.ndarray):
    """Keep the candidates c for which tokenize(detokenize(prefix + [c])) == prefix + [c]."""
    texts = [lm.decode(prefix + [int(c)]) for c in ids]
    enc = lm.tokenizer(texts, add_special_tokens=False)["input_ids"]
    keep = np.array([list(e) == prefix + [int(c)] for e, c in zip(enc, ids)], dtype=bool)
    return ids[keep], probs[keep]


def _cache_arg() -> str:
    import inspect

    from transformers import LlamaForCausalLM

    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


_CACHE_ARG = _cache_arg()  # transformers 5.2x renamed past_key_values to cache


def _cache_of(out):
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


class _threads:
    """Run with a fixed number of torch threads, then restore the caller's setting."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


class _Stepper:
    """Feeds tokens to the model with a KV cache; a shared prompt is computed once for the batch."""

    def __init__(self, lm: LanguageModel, prompt_ids: list[int], batch: int):
        if not prompt_ids:
            raise QdllmError("The prompt is empty; give a few example lines with --prompt.")
        self.lm = lm
        with torch.inference_mode():
            out = lm.model(torch.tensor([prompt_ids]), use_cache=True, logits_to_keep=1)
        self.cache = _cache_of(out)
        if batch > 1:
            self.cache.batch_repeat_interleave(batch)
        self.logits = out.logits[:, -1, :].float().expand(batch, -1)

    def keep(self, rows: list[int]) -> None:
        """Drop finished rows from the cache (rows: positions to keep, in order)."""
        self.cache.batch_select_indices(torch.tensor(rows))
        self.logits = self.logits[rows]

    def feed(self, tokens: list[int]) -> None:
        with torch.inference_mode():
            out = self.lm.model(torch.tensor(tokens)[:, None], use_cache=True, **{_CACHE_ARG: self.cache})
        self.cache = _cache_of(out)
        self.logits = out.logits[:, -1, :].float()


def _cum(lm: LanguageModel, prefix: list[int], logits_row, first: bool, s: StegoSettings):
    (ids, probs), = _candidates(lm, logits_row[None], first, s)
    if s.canonical:
        ids, probs = _canonical(lm, prefix, ids, probs)
    if len(ids) == 0:
        raise QdllmError("No candidate token survives truncation at some step; raise --top-k or --top-p.")
    return ids, quantise(probs, s.freq_bits)


# ---------------------------------------------------------------- single texts: hide and recover


@dataclass
class HiddenText:
    text: str
    tokens: int
    words: int
    message_bits: int  # bits of the message itself
    payload_bits: int  # message + 32 bits of length header and CRC

    @property
    def bits_per_word(self) -> float:
        return self.message_bits / max(self.words, 1)


def encode_bits(bits: list[int], settings: StegoSettings = StegoSettings(), *, lm: LanguageModel | None = None
                ) -> HiddenText:
    """Hide ``bits`` (with a length header and CRC) in one line of text; then finish the word greedily."""
    settings.check()
    lm = lm or load_lm(settings.model, settings.dtype)
    with _threads(settings.threads):
        return _encode(list(bits), settings, lm)


def _encode(bits: list[int], settings: StegoSettings, lm: LanguageModel) -> HiddenText:
    payload = frame(bits)
    coder = ArithmeticCoder(settings.precision, settings.freq_bits, stream=payload)
    step = _Stepper(lm, lm.encode(settings.prompt), 1)
    tokens: list[int] = []
    tail = 0
    while True:
        done = len(coder.emitted) >= len(payload)
        logits = step.logits[0]
        top = int(torch.argmax(logits))
        if done and (tail >= 8 or bool(lm.line_end[top]) or bool(lm.starts_space[top])):
            break  # the payload is in and the model would end the line or the word here
        if len(tokens) >= settings.max_tokens:
            raise QdllmError(f"The message did not fit in --max-tokens {settings.max_tokens} tokens; "
                             "raise --max-tokens or --top-k, or hide fewer bits.")
        ids, cum = _cum(lm, tokens, logits, not tokens, settings)
        if done:  # the payload is in: finish the word with the most probable tokens
            index = 0
            tail += 1
        else:
            index = coder.choose(cum)
        coder.update(cum, index)
        tokens.append(int(ids[index]))
        step.feed(tokens[-1:])
    assert coder.emitted[: len(payload)] == payload, "arithmetic coder lost bits"
    text = lm.decode(tokens)
    if lm.encode(text) != tokens:
        raise QdllmError("The stego text does not retokenise to the tokens that carry the bits; "
                         "keep canonical filtering on (the default) or change the prompt.")
    return HiddenText(text, len(tokens), len(text.split()), len(bits), len(payload))


def decode_text(text: str, settings: StegoSettings = StegoSettings(), *, lm: LanguageModel | None = None) -> list[int]:
    """The bits hidden in ``text`` by ``encode_bits`` with the same settings; QdllmError if there are none."""
    settings.check()
    lm = lm or load_lm(settings.model, settings.dtype)
    with _threads(settings.threads):
        return _decode(text, settings, lm)


def _decode(text: str, settings: StegoSettings, lm: LanguageModel) -> list[int]:
    tokens = lm.encode(text)
    if not tokens:
        raise QdllmError("The text to decode is empty.")
    coder = ArithmeticCoder(settings.precision, settings.freq_bits)
    step = _Stepper(lm, lm.encode(settings.prompt), 1)
    for i, tok in enumerate(tokens):
        ids, cum = _cum(lm, tokens[:i], step.logits[0], i == 0, settings)
        where = np.flatnonzero(ids == tok)
        if len(where) == 0:
            raise QdllmError(
                f"Token {i + 1} ({lm.texts[tok]!r}) is outside the truncated next-token set, so this text was not "
                "made with these settings; use the model, prompt, --top-k/--top-p and precision it was made with.")
        coder.update(cum, int(where[0]))
        step.feed([tok])
    message = unframe(coder.emitted)
    if message is None:
        raise QdllmError("The text carries no valid payload (length header or CRC mismatch); it was not made "
                         "with these settings, or it was changed.")
    return message


# ---------------------------------------------------------------- the stego corpus


@dataclass(frozen=True)
class CorpusSettings:
    """How the hiding task's stegos are made from covers."""

    # bfloat16 runs about twice as fast as float32 on CPUs with AVX-512 BF16; corpus texts need not be decodable
    stego: StegoSettings = StegoSettings(canonical=False, dtype="bfloat16")
    shots: int = 4  # cover examples in each batch's prompt
    batch_size: int = 128
    random_bits: int = 1024  # secret bits drawn per text (more than any short text can carry)


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def _plan(covers: list[str], n: int, seed: int, cs: CorpusSettings) -> list[dict[str, Any]]:
    """Batches of stego indices with similar target lengths, each with its own few-shot prompt."""
    rng = np.random.default_rng([seed, 0])
    lengths = np.array([len(c.split()) for c in covers])
    targets = rng.choice(lengths, size=n, replace=True)
    order = np.argsort(targets, kind="stable")
    batches = []
    for b, start in enumerate(range(0, n, cs.batch_size)):
        idx = [int(i) for i in order[start:start + cs.batch_size]]
        pick = np.random.default_rng([seed, 1, b]).choice(len(covers), size=min(cs.shots, len(covers)), replace=False)
        prompt = "".join(covers[int(p)] + "\n" for p in pick)
        batches.append({"indices": idx, "targets": [int(targets[i]) for i in idx], "prompt": prompt})
    return batches


def _generate_batch(lm: LanguageModel, batch: dict[str, Any], seed: int, cs: CorpusSettings) -> list[dict[str, Any]]:
    """Texts for one batch: random bits steer the tokens; each row stops at its target word count."""
    s = cs.stego
    idx, targets = batch["indices"], batch["targets"]
    coders = [ArithmeticCoder(s.precision, s.freq_bits,
                              stream=[int(b) for b in np.random.default_rng([seed, 2, i]).integers(0, 2, cs.random_bits)])
              for i in idx]
    tokens: list[list[int]] = [[] for _ in idx]
    words = [0] * len(idx)
    bits = [0] * len(idx)
    capped = [False] * len(idx)
    active = list(range(len(idx)))
    step = _Stepper(lm, lm.encode(batch["prompt"]), len(idx))
    first = True
    while active:
        rows = _candidates(lm, step.logits, first, s)
        first = False
        still, feed = [], []
        for pos, r in enumerate(active):
            ids, probs = rows[pos]
            cum = quantise(probs, s.freq_bits)
            index = coders[r].choose(cum)
            tok = int(ids[index])
            starts = not tokens[r] or bool(lm.starts_space[tok])
            if starts and words[r] >= targets[r]:
                continue  # finished: this token would begin one word too many
            if len(tokens[r]) >= min(s.max_tokens, 3 * targets[r] + 8):
                capped[r] = True  # runs of symbols or links: stop short rather than run on
                continue
            coders[r].update(cum, index)
            tokens[r].append(tok)
            words[r] += starts
            bits[r] = len(coders[r].emitted)
            still.append(pos)
            feed.append(tok)
        if not still:
            break
        if len(still) < len(active):
            step.keep(still)
        active = [active[p] for p in still]
        step.feed(feed)
    out = []
    for r, i in enumerate(idx):
        text = _clean(lm.decode(tokens[r]))
        out.append({"i": i, "text": text, "target": targets[r], "words": len(text.split()), "bits": bits[r],
                    "capped": capped[r]})
    return out


def _code_digest() -> str:
    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in ("stego.py", "stego_coder.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()


def _read_done(path: Path) -> dict[int, dict[str, Any]]:
    done: dict[int, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut short by an interruption; its batch is redone
            done[int(row["i"])] = row
    return done


def generate_stego_texts(covers: list[str], n: int, *, seed: int, work_dir: Path,
                         settings: CorpusSettings = CorpusSettings(), lm: LanguageModel | None = None) -> list[str]:
    """``n`` stego texts in the style and length distribution of ``covers``, from seeded random secret bits.

    Finished batches are appended to ``work_dir/stegos.jsonl``; a rerun with the same inputs
    continues from there (and makes the same texts it would have made in one go).
    """
    from rich.progress import TextColumn

    from pipeline.console import progress

    covers = [c for c in (_clean(c) for c in covers) if c]
    if not covers:
        raise QdllmError("The stego generator needs at least one non-empty cover text.")
    if n <= 0:
        return []
    settings.stego.check()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    meta = {"n": n, "seed": seed, "settings": asdict(settings), "code": _code_digest(),
            "covers": hashlib.sha256("\n".join(covers).encode()).hexdigest()}
    meta_path, rows_path = work_dir / "meta.json", work_dir / "stegos.jsonl"
    if meta_path.is_file() and json.loads(meta_path.read_text()) != meta:
        log.warning("stego work dir %s was made with other inputs; starting over", work_dir)
        rows_path.unlink(missing_ok=True)
    meta_path.write_text(json.dumps(meta, indent=1))
    done = _read_done(rows_path)
    batches = _plan(covers, n, seed, settings)
    todo = [b for b in batches if not all(i in done for i in b["indices"])]
    if todo:
        lm = lm or load_lm(settings.stego.model, settings.stego.dtype)
        made = sum(len(b["indices"]) for b in batches) - sum(len(b["indices"]) for b in todo)
        t0, made_now, bits_now, words_now = time.perf_counter(), 0, 0, 0
        rate = TextColumn("")
        with progress(rate) as bar, open(rows_path, "a", encoding="utf-8") as fh:
            task = bar.add_task("stego texts", total=n, completed=made)
            for batch in todo:
                with _threads(settings.stego.threads):
                    rows = _generate_batch(lm, batch, seed, settings)
                fh.write("".join(json.dumps(r) + "\n" for r in rows))
                fh.flush()
                os.fsync(fh.fileno())
                for r in rows:
                    done[r["i"]] = r
                made_now += len(rows)
                bits_now += sum(r["bits"] for r in rows)
                words_now += sum(r["words"] for r in rows)
                dt = time.perf_counter() - t0
                rate.text_format = f"{made_now / dt:.1f} texts/s  {bits_now / max(words_now, 1):.2f} bits/word"
                bar.update(task, advance=len(rows))
        log.info("made %d stego texts in %.0f s (%.2f texts/s, %.2f bits/word)", made_now, time.perf_counter() - t0,
                 made_now / max(time.perf_counter() - t0, 1e-9), bits_now / max(words_now, 1))
    return [done[i]["text"] for i in range(n)]


def corpus_stats(work_dir: Path) -> dict[str, float]:
    """Texts, mean words and bits per word of a generated corpus (from its work dir)."""
    rows = list(_read_done(Path(work_dir) / "stegos.jsonl").values())
    words = sum(r["words"] for r in rows)
    return {"texts": len(rows), "mean_words": words / max(len(rows), 1),
            "bits_per_word": sum(r["bits"] for r in rows) / max(words, 1)}


def length_histograms(covers: list[str], stegos: list[str]) -> dict[str, dict[int, int]]:
    """Word-count histograms {"cover": {words: count}, "stego": {...}}: length alone should not tell them apart."""
    def hist(texts: list[str]) -> dict[int, int]:
        return dict(sorted(Counter(len(str(t).split()) for t in texts).items()))

    return {"cover": hist(covers), "stego": hist(stegos)}


def with_options(base: StegoSettings | None = None, **changes: Any) -> StegoSettings:
    """Settings with the given fields replaced (None values are ignored)."""
    return replace(base or StegoSettings(), **{k: v for k, v in changes.items() if v is not None})
