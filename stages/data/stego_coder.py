"""Integer arithmetic coding for steganography, with no model code (pure Python, exact).

Hiding bits in text is arithmetic *decoding*: the secret bits are read as the compressed
stream and the chosen tokens are the "decompressed" symbols. Recovering the bits is
arithmetic *encoding* of those tokens: the bits it emits are exactly the stream's bits.
Both directions run the same interval updates (Witten–Neal–Cleary with underflow
handling), so one class serves both. Frequencies are integers, so the coder itself is
exactly reproducible; only the float probabilities that feed it depend on the machine.
"""

from __future__ import annotations

import binascii

import numpy as np

from pipeline.errors import QdllmError

LENGTH_BITS = 16  # payload header: message length in bits
CRC_BITS = 16  # payload trailer: CRC-16/CCITT over header + message
MAX_MESSAGE_BITS = (1 << LENGTH_BITS) - 1
# Read past the end of the secret bits. Zeros would put the coder's value on an interval boundary
# where the last bits never become fixed; fixed pseudo-random bits let the interval close in.
_PADDING = [int(b) for b in np.random.default_rng(0x5E90).integers(0, 2, 4096)]


def quantise(probs: np.ndarray, freq_bits: int) -> np.ndarray:
    """Cumulative integer frequencies (length n+1, total 2**freq_bits) for probabilities sorted descending.

    Every token keeps a frequency of at least one; the rounding remainder goes to the most
    probable token. Deterministic given the float64 probabilities.
    """
    total = 1 << freq_bits
    n = len(probs)
    if n == 0 or n > total // 2:
        raise ValueError(f"cannot quantise {n} probabilities into {total} slots")
    p = np.asarray(probs, dtype=np.float64)
    freqs = np.floor(p / p.sum() * (total - n)).astype(np.int64) + 1
    freqs[0] += total - int(freqs.sum())
    cum = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(freqs, out=cum[1:])
    return cum


class ArithmeticCoder:
    """One interval, narrowed token by token; ``emitted`` collects the bits fixed so far."""

    def __init__(self, precision: int = 32, freq_bits: int = 16, stream: list[int] | None = None):
        if freq_bits > precision - 2:
            raise ValueError("freq_bits must be at most precision - 2")
        self.precision = precision
        self.freq_bits = freq_bits
        self.full = (1 << precision) - 1
        self.half = 1 << (precision - 1)
        self.quarter = 1 << (precision - 2)
        self.low, self.high, self.pending = 0, self.full, 0
        self.emitted: list[int] = []
        self.stream = stream  # bits to hide (hiding direction only); _PADDING is read past its end
        self.pos = 0
        self.value = 0
        if stream is not None:
            for _ in range(precision):
                self.value = (self.value << 1) | self._next_bit()

    def _next_bit(self) -> int:
        n = len(self.stream)
        bit = self.stream[self.pos] if self.pos < n else _PADDING[(self.pos - n) % len(_PADDING)]
        self.pos += 1
        return bit

    def choose(self, cum: np.ndarray) -> int:
        """Hiding direction: index of the symbol whose sub-interval holds the stream's value."""
        width = self.high - self.low + 1
        scaled = ((self.value - self.low + 1) * int(cum[-1]) - 1) // width
        return int(np.searchsorted(cum, scaled, side="right")) - 1

    def update(self, cum: np.ndarray, index: int) -> None:
        """Narrow the interval to symbol ``index`` and shift out every bit that became fixed."""
        width = self.high - self.low + 1
        total = int(cum[-1])
        self.high = self.low + width * int(cum[index + 1]) // total - 1
        self.low = self.low + width * int(cum[index]) // total
        hiding = self.stream is not None
        while True:
            if self.high < self.half:
                self._emit(0)
            elif self.low >= self.half:
                self._emit(1)
                self.low -= self.half
                self.high -= self.half
                self.value -= self.half
            elif self.low >= self.quarter and self.high < 3 * self.quarter:
                self.pending += 1
                self.low -= self.quarter
                self.high -= self.quarter
                self.value -= self.quarter
            else:
                break
            self.low <<= 1
            self.high = (self.high << 1) | 1
            if hiding:
                self.value = ((self.value << 1) | self._next_bit()) & self.full

    def _emit(self, bit: int) -> None:
        self.emitted.append(bit)
        self.emitted.extend([1 - bit] * self.pending)
        self.pending = 0


def frame(bits: list[int]) -> list[int]:
    """Payload as hidden: 16-bit length, the message bits, then a CRC-16 over both."""
    if len(bits) > MAX_MESSAGE_BITS:
        raise QdllmError(f"The message has {len(bits)} bits; at most {MAX_MESSAGE_BITS} fit in one text, split it.")
    if any(b not in (0, 1) for b in bits):
        raise QdllmError("The bits to hide must be 0s and 1s only.")
    head = [int(b) for b in format(len(bits), f"0{LENGTH_BITS}b")] + list(bits)
    return _whiten(head + [int(b) for b in format(_crc(head), f"0{CRC_BITS}b")])


def unframe(bits: list[int]) -> list[int] | None:
    """The message inside decoded bits, or None when the length or CRC does not check out."""
    bits = _whiten(bits)
    if len(bits) < LENGTH_BITS + CRC_BITS:
        return None
    n = int("".join(map(str, bits[:LENGTH_BITS])), 2)
    end = LENGTH_BITS + n
    if len(bits) < end + CRC_BITS:
        return None
    crc = int("".join(map(str, bits[end:end + CRC_BITS])), 2)
    if crc != _crc(bits[:end]):
        return None
    return list(bits[LENGTH_BITS:end])


def _whiten(bits: list[int]) -> list[int]:
    """XOR with a fixed pseudo-random sequence, so a short message's zero-filled header does not
    always pick the most probable tokens (the same XOR undoes it)."""
    return [b ^ _PADDING[(i + 2048) % len(_PADDING)] for i, b in enumerate(bits)]


def _crc(bits: list[int]) -> int:
    packed = np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes() if bits else b""
    return binascii.crc_hqx(packed + len(bits).to_bytes(4, "big"), 0xFFFF)


def bytes_to_bits(data: bytes) -> list[int]:
    return [int(b) for b in np.unpackbits(np.frombuffer(data, dtype=np.uint8))] if data else []


def bits_to_bytes(bits: list[int]) -> bytes:
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes()
