"""``qdllm data stego encode|decode``: hide bits or a message in one line of text, and read them back.

Light at import time (the data CLI mounts it): torch and the model load inside the commands.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from pipeline.console import console
from pipeline.errors import QdllmError

app = typer.Typer(help="Language-model steganography: hide bits in a line of text (encode) and get them back (decode).",
                  no_args_is_help=True)

Model = Annotated[str, typer.Option("--model", help="Packaged name (smollm2-135m), local directory or hub id.")]
TopK = Annotated[Optional[int], typer.Option("--top-k", help="Keep the k most probable next tokens (default 64).")]
TopP = Annotated[Optional[float], typer.Option("--top-p", help="Nucleus: keep the smallest set with this probability "
                                                                "(alone, or with --top-k as a cap).")]
Prompt = Annotated[Optional[str], typer.Option("--prompt", help="Context lines the text continues (\\n separates "
                                                                "lines); default: four built-in example lines.")]
Precision = Annotated[int, typer.Option("--precision", help="Bits of the arithmetic coder's interval.")]
FreqBits = Annotated[int, typer.Option("--freq-bits", help="Quantised token frequencies sum to 2**freq-bits.")]
Dtype = Annotated[str, typer.Option("--dtype", help="float32 or bfloat16 (both sides must match).")]
Threads = Annotated[int, typer.Option("--threads", help="torch CPU threads (both sides must match).")]
MaxTokens = Annotated[int, typer.Option("--max-tokens", help="Most tokens one stego text may have.")]


def _settings(model, top_k, top_p, prompt, precision, freq_bits, dtype, threads, max_tokens):
    from stages.data.stego import StegoSettings, with_options

    if top_k is None and top_p is None:
        top_k = StegoSettings().top_k
    if prompt is not None:
        prompt = prompt.replace("\\n", "\n")
        if not prompt.endswith("\n"):
            prompt += "\n"
    return with_options(StegoSettings(top_k=top_k, top_p=top_p), model=model, prompt=prompt, precision=precision,
                        freq_bits=freq_bits, dtype=dtype, threads=threads, max_tokens=max_tokens)


@app.command()
def encode(
    bits: Annotated[Optional[str], typer.Option("--bits", help="The secret as a string of 0s and 1s.")] = None,
    message: Annotated[Optional[str], typer.Option("--message", help="The secret as text (UTF-8).")] = None,
    model: Model = "smollm2-135m", top_k: TopK = None, top_p: TopP = None, prompt: Prompt = None,
    precision: Precision = 32, freq_bits: FreqBits = 16, dtype: Dtype = "float32", threads: Threads = 1,
    max_tokens: MaxTokens = 256,
) -> None:
    """Print a line of text that hides the bits (or message), then its payload in bits per word."""
    from stages.data.stego import encode_bits
    from stages.data.stego_coder import bytes_to_bits

    if (bits is None) == (message is None):
        raise QdllmError("Give exactly one of --bits 0101... or --message TEXT.")
    if bits is not None:
        bits = bits.strip()
        if any(c not in "01" for c in bits):
            raise QdllmError("--bits must hold only 0s and 1s, e.g. --bits 01101.")
        secret = [int(c) for c in bits]
    else:
        secret = bytes_to_bits(message.encode("utf-8"))
    s = _settings(model, top_k, top_p, prompt, precision, freq_bits, dtype, threads, max_tokens)
    hidden = encode_bits(secret, s)
    typer.echo(hidden.text)
    console.print(f"{hidden.message_bits} message bits ({hidden.payload_bits} with header and CRC) in "
                  f"{hidden.words} words, {hidden.tokens} tokens: {hidden.bits_per_word:.2f} bits/word "
                  f"({hidden.payload_bits / max(hidden.words, 1):.2f} with header)")


@app.command()
def decode(
    text: Annotated[str, typer.Argument(help="A text made by `qdllm data stego encode` with the same settings.")],
    model: Model = "smollm2-135m", top_k: TopK = None, top_p: TopP = None, prompt: Prompt = None,
    precision: Precision = 32, freq_bits: FreqBits = 16, dtype: Dtype = "float32", threads: Threads = 1,
    max_tokens: MaxTokens = 256,
) -> None:
    """Print the hidden bits, and the message when they are UTF-8 text."""
    from stages.data.stego import decode_text
    from stages.data.stego_coder import bits_to_bytes

    s = _settings(model, top_k, top_p, prompt, precision, freq_bits, dtype, threads, max_tokens)
    bits = decode_text(text, s)
    typer.echo("".join(map(str, bits)))
    if bits and len(bits) % 8 == 0:
        try:
            console.print(f"message: {bits_to_bytes(bits).decode('utf-8')}")
        except UnicodeDecodeError:
            pass
