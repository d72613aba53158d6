"""The detectors against a sweep's attackers, and the evasion frontier.

Where a sweep varies what an attacker does against the detectors (``loss.evade_*``,
``loss.beta_ent``, ``model.covert_key``), every run's classifier is audited as a user would
audit it: the detector suite on the dataset's audit images, against the calibration of
``vicious audit`` (the cache's, else the shipped one). Scores are kept in the run's
``detectors.json`` (per detector settings), so only the first table computes them.

* ``detection``: per run, its accuracy, its own decoder's PSNR and the label-only floor's,
  and per detector the primary score and its verdict;
* ``frontier``: per detector, and for all of them together (the audit's overall verdict
  taken from every detector, not only the deciding one), the most a server keeps while it
  still says likely-honest: the highest PSNR of its own decoder among the runs it calls
  likely-honest, and that run's settings; among the attackers whose accuracy lies within
  ``ACCURACY_TOLERANCE`` of the most accurate attacker's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from vicious.defences.audit import load_or_calibrate
from vicious.defences.black_box import open_classifier
from vicious.defences.calibration import Calibration, overall_verdict, user_images
from vicious.defences.suite import PRIMARY, score_classifier
from vicious.runs.files import atomic_write_json, read_json
from vicious.runs.layout import open_run
from vicious.studies.table import PSNR, PSNR_LABEL_ONLY, Column, RunRecord, Table, settings_of

#: Config keys whose variation makes a sweep a study of attackers against the detectors.
ATTACKER_KEYS = ("loss.evade_", "loss.beta_ent", "model.covert_key")
SCORES_FILE = "detectors.json"
#: Attackers more than this below the most accurate one are left out of the frontier.
ACCURACY_TOLERANCE = 0.05


def studies_attackers(keys: Sequence[str]) -> bool:
    return any(k.startswith(ATTACKER_KEYS) for k in keys)


def audit_calibration(dataset: str, image_size: int) -> Calibration | None:
    """The calibration ``vicious audit`` would use for a benchmark dataset, or None."""
    try:
        return load_or_calibrate(dataset, image_size=image_size)[0]
    except FileNotFoundError:  # none in the cache, none shipped
        return None


def run_scores(record: RunRecord, calibration: Calibration) -> dict[str, dict[str, float]]:
    """The detector suite's scores of a finished run's classifier (cached in the run)."""
    settings = calibration.settings
    digest = hashlib.sha256(settings.model_dump_json().encode()).hexdigest()[:12]
    cache = record.path / SCORES_FILE
    if cache.is_file():
        saved = read_json(cache, what="detector scores")
        if isinstance(saved, dict) and saved.get("settings") == digest and isinstance(saved.get("scores"), dict):
            return saved["scores"]
    run = open_run(record.path)
    images, labels = user_images(run.splits, settings)
    with open_classifier(record.path, run.splits.info, run.config.data.image_size, trusted=True) as box:
        scores = score_classifier(box, images, settings, labels).scores
    atomic_write_json(cache, {"settings": digest, "scores": scores})
    return scores


def detection_tables(records: Sequence[RunRecord], keys: Sequence[str]) -> list[Table]:
    """``detection`` and ``frontier``, or none where the runs vary no attacker setting."""
    if not studies_attackers(keys):
        return []
    rows, audited, calibrations = [], [], {}
    for record in sorted(records, key=lambda r: (r.regime, r.output, settings_of(r, keys), r.seed)):
        where = (record.dataset, int(record.config.get("data.image_size", 32)))
        if where not in calibrations:
            calibrations[where] = audit_calibration(*where)
        calibration = calibrations[where]
        if calibration is None:
            continue
        scores = run_scores(record, calibration)
        primary = {d: scores[d][PRIMARY[d]] for d in PRIMARY if d in scores}
        overall, each = calibration.verdicts(primary)
        every = overall_verdict(each, deciding_detectors=tuple(each))  # as if every detector decided
        audited.append((record, each, every))
        rows.append([record.name, record.regime, record.output, *settings_of(record, keys), record.seed,
                     record.metrics.get("accuracy"), PSNR.finite_value(record.metrics),
                     PSNR_LABEL_ONLY.finite_value(record.metrics),
                     *(x for d in PRIMARY for x in (primary.get(d), each.get(d, "–"))), overall])
    columns = [Column("run", "run"), Column("regime", "regime"), Column("output", "output"),
               *(Column(k, k) for k in keys), Column("seed", "seed"), Column("accuracy", "accuracy", "{:.3f}"),
               Column("psnr", "own decoder PSNR (dB)", "{:.2f}"), Column("psnr_label_only", "label only (dB)", "{:.2f}"),
               *(c for d in PRIMARY for c in (Column(f"{d}", f"{d} ({PRIMARY[d]})", "{:.3f}"),
                                               Column(f"{d}_verdict", f"{d} verdict"))),
               Column("verdict", "audit verdict")]
    notes = ["Each run's classifier audited as `vicious audit` would (its calibration: the cache's, else the "
             "shipped one; only excess leakage decides the audit verdict)."]
    if not rows:
        notes.append("No run could be audited: no calibration for these datasets (run 'vicious calibrate').")
    frontier_rows = []
    attackers = [(r, each, every) for r, each, every in audited if r.regime != "honest"]
    # A server whose classifier gave up its task would be noticed without any detector.
    accuracies = [a for a in (r.metrics.get("accuracy") for r, _, _ in attackers) if a is not None]
    floor = max(accuracies, default=0.0) - ACCURACY_TOLERANCE
    attackers = [(r, each, every) for r, each, every in attackers if (r.metrics.get("accuracy") or 0.0) >= floor]
    for name in [*PRIMARY, "all detectors"]:
        passing = [(r, PSNR.finite_value(r.metrics)) for r, each, every in attackers
                   if (every if name == "all detectors" else each.get(name)) == "likely-honest"]
        passing = [(r, p) for r, p in passing if p is not None]
        best = max(passing, key=lambda item: item[1], default=None)
        frontier_rows.append([name, len(passing), len(attackers), best[0].metrics.get("accuracy") if best else None,
                              best[1] if best else None,
                              PSNR_LABEL_ONLY.finite_value(best[0].metrics) if best else None,
                              ", ".join(f"{k}={v}" for k, v in zip(keys, settings_of(best[0], keys))) if best else "–",
                              best[0].name if best else "–"])
    frontier = Table("frontier", "Evasion frontier: the leakage kept while a detector says likely-honest",
                     [Column("detector", "detector"), Column("passing", "attackers called likely-honest"),
                      Column("attackers", "attackers"), Column("accuracy", "its accuracy", "{:.3f}"),
                      Column("psnr", "best own-decoder PSNR (dB)", "{:.2f}"),
                      Column("psnr_label_only", "its label-only floor (dB)", "{:.2f}"),
                      Column("settings", "its settings"), Column("run", "run")],
                     frontier_rows, ["Over the non-honest runs whose accuracy lies within "
                                     f"{ACCURACY_TOLERANCE:.0%} of the most accurate one's (a server that gives up "
                                     "more would be noticed without a detector): the highest PSNR of a server's own "
                                     "decoder among the runs each detector (all detectors: every one of them) calls "
                                     "likely-honest."])
    return [Table("detection", "The detectors against the attackers", columns, rows, notes), frontier]
