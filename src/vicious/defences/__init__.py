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
(:mod:`vicious.defences.release`) blunt what leaves the device.
"""

import importlib

# Imported on first use, so that `vicious --help` and the other commands stay fast.
_EXPORTS = {
    "BlackBox": "black_box", "open_classifier": "black_box", "Detector": "detector",
    "ExcessLeakage": "excess_leakage", "LeakageAssessment": "excess_leakage",
    "OutputStatistics": "output_statistics", "effective_rank": "output_statistics",
    "output_statistics": "output_statistics", "roc_auc": "roc", "tpr_at_fpr": "roc",
    "Sensitivity": "sensitivity", "SuiteResult": "suite", "SuiteSettings": "suite",
    "build_detectors": "suite", "score_classifier": "suite",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vicious.defences' has no attribute {name!r}")
    return getattr(importlib.import_module(f"vicious.defences.{_EXPORTS[name]}"), name)


__all__ = [
    "BlackBox",
    "Detector",
    "ExcessLeakage",
    "LeakageAssessment",
    "OutputStatistics",
    "Sensitivity",
    "SuiteResult",
    "SuiteSettings",
    "build_detectors",
    "effective_rank",
    "open_classifier",
    "output_statistics",
    "roc_auc",
    "score_classifier",
    "tpr_at_fpr",
]
