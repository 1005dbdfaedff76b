"""Compression baselines: transformer students (TinyBERT-, DistilBERT- and MiniLLM-style) distilled from a teacher
cache, beside the quantum student (docs/baselines.md)."""
