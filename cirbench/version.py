"""The version of cirbench (a leaf module: every other one may import it)."""

__version__ = "0.1.0"
