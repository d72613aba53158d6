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

from vicious.defences.black_box import BlackBox, open_classifier
from vicious.defences.detector import Detector
from vicious.defences.excess_leakage import ExcessLeakage, LeakageAssessment
from vicious.defences.output_statistics import OutputStatistics, effective_rank, output_statistics
from vicious.defences.roc import roc_auc, tpr_at_fpr
from vicious.defences.sensitivity import Sensitivity
from vicious.defences.suite import SuiteResult, SuiteSettings, build_detectors, score_classifier

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
