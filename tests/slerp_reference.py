"""Spherical interpolation written out from its definition, independent of mergekit."""

import numpy as np


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    an, bn = a64 / np.linalg.norm(a64), b64 / np.linalg.norm(b64)
    dot = float(np.clip((an * bn).sum(), -1.0, 1.0))
    if abs(dot) > 0.9995:  # nearly parallel: slerp and lerp agree, and lerp is numerically stable
        return (1 - t) * a64 + t * b64
    omega = np.arccos(dot)
    return (np.sin((1 - t) * omega) * a64 + np.sin(t * omega) * b64) / np.sin(omega)
