"""Pure tensor metrics for the vicious-classifier experiments.

Tensors in, tensors out, no global state, computed on the inputs' device.
Images are float tensors ``(N, C, H, W)`` with values in ``[0, 1]``; per-sample
metrics return ``(N,)``. Every function validates its inputs with one shared
validator (:mod:`vicious.metrics._validate`) that raises :class:`ValueError`
with a one-line message naming the problem and the fix.

========================  ===================================================
``accuracy``              top-1 (multiclass) or per-attribute (multilabel) 0/1
``correct_predictions``   the same, unchecked: for training loops
``mse``, ``psnr``          per-image MSE and PSNR (data range 1)
``psnr_from_mean_mse``    the paper's PSNR of the set's mean MSE (scalar)
``psnr_from_mse``         PSNR of a precomputed (e.g. streamed) mean MSE
``ssim``                  per-image SSIM, 11×11 Gaussian σ=1.5 (= skimage)
``ssim_separable``        the same SSIM in two 1-D passes, unchecked: for training loops
``ImageStatistics``       streamed mean/covariance eigendecomposition
``reconstruction_risk``   r = d(x, x̄) / d(x, x̃), ``exact`` or ``principal``
``summarise_risk``        mean (R), median, fraction with r > 1
``reidentification``      top-k rate of matching reconstructions to sources
``bootstrap_ci``          percentile-bootstrap interval of a mean
========================  ===================================================
"""

from ._validate import RANGE_TOLERANCE
from .accuracy import accuracy, correct_predictions, is_multilabel, mean_accuracy, per_attribute_accuracy
from .bootstrap import bootstrap_ci
from .mse import MSE, mse
from .psnr import MAX_PSNR_DB, MSE_FLOOR, PSNR, psnr, psnr_from_mean_mse, psnr_from_mse
from .reidentification import reidentification
from .risk import RISK_EPS, reconstruction_risk, summarise_risk
from .ssim import SSIM, ssim, ssim_separable
from .statistics import VARIANTS, ImageStatistics

__all__ = [
    "RANGE_TOLERANCE",
    "accuracy",
    "correct_predictions",
    "mean_accuracy",
    "per_attribute_accuracy",
    "is_multilabel",
    "mse",
    "MSE",
    "psnr",
    "PSNR",
    "psnr_from_mse",
    "psnr_from_mean_mse",
    "MSE_FLOOR",
    "MAX_PSNR_DB",
    "ssim",
    "ssim_separable",
    "SSIM",
    "ImageStatistics",
    "VARIANTS",
    "reconstruction_risk",
    "summarise_risk",
    "RISK_EPS",
    "reidentification",
    "bootstrap_ci",
]
