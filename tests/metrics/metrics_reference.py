"""Independent numpy computations of the reconstruction risk, straight from the formula."""

from __future__ import annotations

import numpy as np


def flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(len(x), -1)


def mahalanobis(u: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """sqrt(uᵢᵀ P uᵢ) for each row uᵢ of u."""
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", u, precision, u), 0.0))


def exact_precision(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, Σ⁺) with np.cov (1/(N-1)) and np.linalg.pinv (hermitian, API-standard rtol D·eps)."""
    t = flat(train)
    cov = np.cov(t, rowvar=False)
    return t.mean(axis=0), np.linalg.pinv(cov, hermitian=True, rtol=None)


def principal_precision(train: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray, int]:
    """(mean, V_k Λ_k⁻¹ V_kᵀ, k): PCA by eigh of np.cov, k the smallest count reaching `fraction`."""
    t = flat(train)
    cov = np.cov(t, rowvar=False)
    lam, vec = np.linalg.eigh(cov)
    lam, vec = lam[::-1], vec[:, ::-1]
    lam = np.clip(lam, 0, None)
    k = int(np.searchsorted(np.cumsum(lam) / lam.sum(), fraction) + 1)
    vk = vec[:, :k]
    return t.mean(axis=0), (vk / lam[:k]) @ vk.T, k


def risk(x: np.ndarray, x_rec: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    a, b = flat(x), flat(x_rec)
    return mahalanobis(a - mean, precision) / mahalanobis(a - b, precision)
