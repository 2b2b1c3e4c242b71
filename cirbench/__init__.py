"""cirbench: composed image retrieval benchmarks under one protocol."""

__version__ = "0.1.0"
