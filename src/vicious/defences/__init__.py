"""Defences a user can run on their own device against vicious classifiers.

Detectors (one interface, :class:`Detector`: ``fit(images)``, ``scores(classifier,
images)``, ``score(...)``; higher = more suspicious) look at a classifier only
through a :class:`BlackBox` (images -> outputs):

* :class:`OutputStatistics`: entropy, confidence, logit norm, within-class spread,
  effective rank of the outputs on the user's images;
* :class:`Sensitivity`: output movement under small label-preserving changes;
* :class:`ExcessLeakage`: shadow decoders on outputs vs on labels alone.

``vicious audit`` (:mod:`vicious.defences.audit`) runs them on a TorchScript, ONNX
or run-directory classifier against thresholds calibrated on honest reference
classifiers (:mod:`vicious.defences.calibration`). Release policies
(:mod:`vicious.release.policies`) blunt what leaves the device; what they cost is
measured by :mod:`vicious.defences.release_evaluation`; a purifier (a learned release policy) is
fitted on the user's images by :mod:`vicious.defences.purifier`.
"""

from __future__ import annotations

import importlib

# Loaded on first use, so that `vicious --help` and the CLI's other commands need not
# import torch and torchvision for the defences (name -> the module that defines it).
_EXPORTS = {
    "BlackBox": "black_box",
    "open_classifier": "black_box",
    "Detector": "detector",
    "ExcessLeakage": "excess_leakage",
    "LeakageAssessment": "excess_leakage",
    "OutputStatistics": "output_statistics",
    "describe_outputs": "output_statistics",
    "effective_rank": "output_statistics",
    "roc_auc": "roc",
    "tpr_at_fpr": "roc",
    "Sensitivity": "sensitivity",
    "SuiteResult": "suite",
    "SuiteSettings": "suite",
    "build_detectors": "suite",
    "score_classifier": "suite",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
