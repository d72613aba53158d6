"""Does the audit hold for classifiers trained elsewhere? (Fashion-MNIST, 32 px)

Two independent populations (other seeds, other training images, honest output forms
swapped) of classifiers trained by this benchmark's own loops (``audit_populations.py``:
four architectures, eight honest recipes, vicious raw and softmax, adaptive beta_ent),
each exported to ONNX or TorchScript and audited from that file, in the sandbox, with
the detector suite on the audit's test images. Printed:

* per model: accuracy, the margin of its own decoder over an honest post-hoc decoder
  (dB; a vicious model must leak >= 1.5 dB more than honest ones to count), each
  deciding score, and the verdicts (a) under the thresholds of the *other* population's
  honest models and (b) under the package's calibration (its honest zoo);
* per detector sub-score: ROC AUC and TPR at 5% FPR, honest vs vicious, honest vs adaptive;
* the counts: honest called likely-vicious, vicious (margin >= 1.5 dB) called likely-vicious.

    OMP_NUM_THREADS=2 python benchmarks/bench_audit.py --out /tmp/bench-audit [--json F]

Models, records and scores are kept in --out and reused when the script runs again
(scores per detector settings).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_populations import build_population  # noqa: E402

from vicious.data import load_dataset  # noqa: E402
from vicious.defences import open_classifier, roc_auc, score_classifier, tpr_at_fpr  # noqa: E402
from vicious.defences.calibration import (  # noqa: E402
    DECIDING_DETECTORS,
    Calibration,
    Reference,
    calibration_path,
    pool_scores,
    shipped_calibration,
    user_images,
)
from vicious.defences.suite import PRIMARY, SuiteSettings, make_settings  # noqa: E402

MARGIN_DB = 1.5


def score_population(records: list[dict], folder: Path, splits, settings: SuiteSettings) -> None:
    """Adds ``scores`` (detector -> sub-score -> value) to every record, cached per settings."""
    digest = hashlib.sha256(settings.model_dump_json().encode()).hexdigest()[:10]
    cache = folder / f"scores-{digest}"
    cache.mkdir(exist_ok=True)
    images, labels = user_images(splits, settings)
    for record in records:
        file = cache / f"{record['name']}.json"
        if not file.exists():
            start = time.perf_counter()
            with open_classifier(folder / record["model_file"], splits.info, 32) as box:
                result = score_classifier(box, images, settings, labels)
            file.write_text(json.dumps({"scores": result.scores, "seconds": time.perf_counter() - start}))
        saved = json.loads(file.read_text())
        record["scores"], record["score_seconds"] = saved["scores"], saved["seconds"]


def calibration_from(records: list[dict], settings: SuiteSettings) -> Calibration:
    honest = [r for r in records if r["kind"] == "honest"]
    refs = [Reference(name=r["name"], accuracy=r["accuracy"]) for r in honest]
    return Calibration.from_scores("fashion-mnist", 32, settings, pool_scores([r["scores"] for r in honest]), refs)


def counts(records: list[dict], key: str) -> dict[str, str]:
    honest = [r for r in records if r["kind"] == "honest"]
    leaky = [r for r in records if r["kind"] != "honest" and r["margin_db"] >= MARGIN_DB]
    weak = [r for r in records if r["kind"] != "honest" and r["margin_db"] < MARGIN_DB]

    def share(group, verdict):
        return f"{sum(r[key] == verdict for r in group)}/{len(group)}"

    return {"honest likely-vicious": share(honest, "likely-vicious"), "honest likely-honest": share(honest, "likely-honest"),
            f"vicious (margin >= {MARGIN_DB} dB) likely-vicious": share(leaky, "likely-vicious"),
            f"vicious (margin < {MARGIN_DB} dB) likely-vicious": share(weak, "likely-vicious")}


def separation(records: list[dict]) -> list[dict]:
    honest = [r for r in records if r["kind"] == "honest"]
    rows = []
    for detector, subs in honest[0]["scores"].items():
        for sub in subs:
            row = {"score": f"{detector}.{sub}" + (" *" if sub == PRIMARY[detector] else "")}
            for kind in ("vicious", "adaptive"):
                positives = [r["scores"][detector][sub] for r in records if r["kind"] == kind]
                negatives = [r["scores"][detector][sub] for r in honest]
                row[f"AUC {kind}"] = roc_auc(negatives, positives)
                row[f"TPR@5% {kind}"] = tpr_at_fpr(negatives, positives, 0.05)
            rows.append(row)
    return rows


def _setting(item: str) -> tuple[str, object]:
    key, _, text = item.partition("=")
    field = SuiteSettings.model_fields[key]
    return key, field.annotation(text) if field.annotation in (int, float) else text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-audit"))
    parser.add_argument("--calibration", type=Path, help="the package's calibration to apply (default: cache, else shipped)")
    parser.add_argument("--train-images", type=int, default=8000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="detector settings, e.g. shadow_decoder=conv shadow_patience=4 shadow_epochs=60")
    args = parser.parse_args()
    settings = make_settings(**dict(_setting(item) for item in args.set))
    splits = load_dataset("fashion-mnist", image_size=32)
    test = splits.test.subset(settings.num_images, seed=settings.seed)
    populations = []
    for index in (0, 1):
        train = splits.train.subset(args.train_images, seed=index + 1)
        folder = args.out / f"population-{index}"
        print(f"population {index + 1} ({splits.source})", flush=True)
        records = build_population(index, folder, train.float_images(), train.labels, test.float_images(),
                                   test.labels, splits.info.num_outputs)
        score_population(records, folder, splits, settings)
        populations.append(records)
    package = args.calibration or (calibration_path("fashion-mnist") if calibration_path("fashion-mnist").is_file()
                                   else shipped_calibration("fashion-mnist"))
    package_calibration = Calibration.load(package) if package else None
    for index, records in enumerate(populations):
        other = calibration_from(populations[1 - index], settings)
        for r in records:
            primary = {d: r["scores"][d][PRIMARY[d]] for d in r["scores"]}
            r["verdict_other_population"] = other.verdicts(primary)[0]
            if package_calibration:
                r["verdict_package"] = package_calibration.verdicts(primary)[0]
    print(f"\ndetector settings: {settings.model_dump()}")
    report = {"settings": settings.model_dump(), "data_source": splits.source, "deciding": list(DECIDING_DETECTORS),
              "package_calibration": str(package) if package else None, "populations": []}
    for index, records in enumerate(populations):
        print(f"\n## Population {index + 1}: thresholds from population {2 - index} / from the package's zoo\n")
        columns = ["name", "accuracy", "margin_db", *[f"{d}" for d in PRIMARY], "verdict_other_population",
                   "verdict_package"]
        print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
        for r in records:
            cells = [r["name"], f"{r['accuracy']:.3f}", f"{r['margin_db']:+.2f}" if "margin_db" in r else "–",
                     *[f"{r['scores'][d][PRIMARY[d]]:.3f}" for d in PRIMARY],
                     r["verdict_other_population"], r.get("verdict_package", "–")]
            print("| " + " | ".join(cells) + " |")
        summary = {"other population": counts(records, "verdict_other_population")}
        if package_calibration:
            summary["package zoo"] = counts(records, "verdict_package")
        for source, values in summary.items():
            print(f"\nthresholds from the {source}: " + "; ".join(f"{k}: {v}" for k, v in values.items()))
        rows = separation(records)
        print("\n| score | AUC vicious | TPR@5% vicious | AUC adaptive | TPR@5% adaptive |\n|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['score']} | {row['AUC vicious']:.2f} | {row['TPR@5% vicious']:.2f} | "
                  f"{row['AUC adaptive']:.2f} | {row['TPR@5% adaptive']:.2f} |")
        seconds = [r["score_seconds"] for r in records]
        print(f"\nscoring: median {sorted(seconds)[len(seconds) // 2]:.1f} s per model (in the sandbox)")
        report["populations"].append({"models": records, "summary": summary, "separation": rows})
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
