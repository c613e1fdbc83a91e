"""Hala: the translate-and-tune recipe (arXiv 2509.14008) as an MLOps pipeline."""

__version__ = "0.1.0"


def cache_home():
    """This machine's hala cache (``$HALA_CACHE``, default ~/.cache/hala): tiny models, s3:// copies."""
    import os
    from pathlib import Path

    return Path(os.environ.get("HALA_CACHE", Path.home() / ".cache" / "hala"))
