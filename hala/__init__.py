"""Hala: the translate-and-tune recipe (arXiv 2509.14008) as an MLOps pipeline."""

__version__ = "0.1.0"
