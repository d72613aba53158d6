"""Do the detectors hold against attackers who know them? (Fashion-MNIST, 32 px, CPU-sized)

Two independent populations (other seeds, other training images). Each holds

* the honest zoo of the audit (``vicious.defences.zoo``: eight recipes, four architectures,
  both output forms), trained with the population's seeds;
* eight classifiers per attacker type, trained through ``vicious`` (``train_run``) with the
  CPU-sized config, each a vicious pair of its own seed and output form (``ATTACKERS``):
  plain vicious, the entropy penalty (``loss.beta_ent``), trained through a release
  policy, each evasion term and all of them (``loss.evade_*``), and the covert keyed
  encoding (``model.covert_key``), where this vicious has them.

Every classifier is scored by the audit's detector suite on the same 2,000 user images (the
shipped calibration's settings). Printed per attacker type and detector primary score: ROC
AUC and TPR at 5% FPR against the population's honest zoo; then the verdicts under the
thresholds of the *other* population's honest zoo and under the shipped calibration.

    OMP_NUM_THREADS=1 python benchmarks/bench_adaptive_detection.py --out /tmp/bench-adaptive [--types vicious entropy]

Runs and scores are kept in --out and reused when the script runs again.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_audit import calibration_from  # noqa: E402  (the honest records' thresholds, as bench_audit derives them)

from vicious.config.presets import cpu_sized_config  # noqa: E402
from vicious.config.schema import LossConfig, ModelConfig  # noqa: E402
from vicious.data import load_dataset  # noqa: E402
from vicious.defences import roc_auc, score_classifier, tpr_at_fpr  # noqa: E402
from vicious.defences.black_box import BlackBox  # noqa: E402
from vicious.defences.calibration import Calibration, shipped_calibration, user_images  # noqa: E402
from vicious.defences.suite import PRIMARY, SuiteSettings  # noqa: E402
from vicious.defences.zoo import DEFAULT_ZOO, Released, reference_box, train_reference  # noqa: E402
from vicious.release.outputs import observed_form  # noqa: E402
from vicious.runs.evaluation import evaluate_run  # noqa: E402
from vicious.runs.layout import open_run  # noqa: E402
from vicious.runs.training import train_run  # noqa: E402

# Eight models per type: two output forms x four variants (a seed each, and the type's knob).
ATTACKERS: dict[str, list[dict]] = {
    "vicious": [{"loss.beta_r": b} for b in (1.0, 3.0)],
    "entropy": [{"loss.beta_ent": b} for b in (1.0, 3.0)],
    "through-policy": [{"release.policy": "topk", "release.k": 3}, {"release.policy": "gaussian", "release.scale": 0.5}],
    "evade-logit-norm": [{"loss.evade_logit_norm": w} for w in (3.0, 30.0)],
    "evade-contrast": [{"loss.evade_contrast": w} for w in (3.0, 30.0)],
    "evade-leakage": [{"loss.evade_leakage": w} for w in (3.0, 30.0)],
    "evade-all": [{"loss.evade_logit_norm": w, "loss.evade_confidence": w, "loss.evade_contrast": w,
                   "loss.evade_leakage": w} for w in (3.0, 30.0)],
    "covert": [{"model.covert_key": key} for key in (101, 202)],
}
SECTIONS = {"loss": LossConfig, "model": ModelConfig}


def available(overrides: dict) -> bool:
    """Whether this vicious has every config key an attacker needs (the later ones may be missing)."""
    return all(key.split(".")[0] not in SECTIONS or key.split(".")[1] in SECTIONS[key.split(".")[0]].model_fields
               for key in overrides)


def attacker_runs(kind: str, population: int) -> list[tuple[str, dict]]:
    """(name, config overrides) of the eight models of one attacker type in one population."""
    runs = []
    for output in ("raw", "softmax"):
        for i, knob in enumerate(ATTACKERS[kind]):
            for repeat in range(2):
                seed = 1000 * population + 10 * i + repeat + (5 if output == "softmax" else 0)
                runs.append((f"{kind}-{output}-{i}-{repeat}", {"output": output, "seed": seed, **knob}))
    return runs


def train_attacker(folder: Path, overrides: dict, train_limit: int, epochs: int) -> dict:
    if not (folder / "metrics.json").exists():
        settings = {k: v for k, v in overrides.items() if k not in ("output", "seed")}
        config = cpu_sized_config("fashion-mnist", overrides["seed"], train_limit=train_limit, epochs=epochs,
                                  regime="vicious", output=overrides["output"], overrides=settings)
        train_run(config, folder, resume=(folder / "config.yaml").exists())
        evaluate_run(folder)
    return json.loads((folder / "metrics.json").read_text())


def run_box(folder: Path) -> BlackBox:
    run = open_run(folder)
    form = observed_form(run.config.output)
    return BlackBox.from_module(Released(run.classifier.eval(), form, run.splits.info.task), run.splits.info, 32,
                                form=form, source=folder.name)


def cached_scores(path: Path, score) -> dict:
    if not path.exists():
        start = time.perf_counter()
        result = score()
        path.write_text(json.dumps({"scores": result.scores, "accuracy": result.accuracy,
                                    "seconds": round(time.perf_counter() - start, 1)}))
    return json.loads(path.read_text())


def build_population(population: int, out: Path, splits, settings: SuiteSettings, kinds: list[str],
                     train_limit: int, epochs: int) -> list[dict]:
    folder = out / f"population-{population}"
    (folder / "scores").mkdir(parents=True, exist_ok=True)
    images, labels = user_images(splits, settings)
    records = []
    train = splits.train.subset(train_limit, seed=population)
    for member in DEFAULT_ZOO:
        member = member.model_copy(update={"seed": member.seed + 100 * population})
        name = f"honest-{member.name}"

        def score(member=member):
            network = train_reference(member, train.float_images(), train.labels, splits.info, 32)
            return score_classifier(reference_box(network, member, splits.info, 32), images, settings, labels)

        saved = cached_scores(folder / "scores" / f"{name}.json", score)
        records.append({"name": name, "kind": "honest", **saved})
        print(f"  {name}: accuracy {saved['accuracy']:.3f}", flush=True)
    for kind in kinds:
        for name, overrides in attacker_runs(kind, population):
            run_dir = folder / "runs" / name
            metrics = train_attacker(run_dir, overrides, train_limit, epochs)
            saved = cached_scores(folder / "scores" / f"{name}.json",
                                  lambda run_dir=run_dir: score_classifier(run_box(run_dir), images, settings, labels))
            records.append({"name": name, "kind": kind, **saved, "decoder_psnr": metrics["psnr"],
                            "label_only_psnr": metrics["label_only"]["psnr"]})
            print(f"  {name}: accuracy {saved['accuracy']:.3f}, own decoder {metrics['psnr']:.2f} dB "
                  f"(label only {metrics['label_only']['psnr']:.2f})", flush=True)
    return records


def primary(record: dict) -> dict[str, float]:
    return {d: record["scores"][d][PRIMARY[d]] for d in PRIMARY}


def separation(records: list[dict], kinds: list[str]) -> list[dict]:
    honest = [primary(r) for r in records if r["kind"] == "honest"]
    rows = []
    for kind in kinds:
        chosen = [primary(r) for r in records if r["kind"] == kind]
        for detector in PRIMARY:
            negatives, positives = [h[detector] for h in honest], [c[detector] for c in chosen]
            rows.append({"attacker": kind, "detector": detector, "auc": roc_auc(negatives, positives),
                         "tpr_at_5": tpr_at_fpr(negatives, positives, 0.05)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-adaptive"))
    parser.add_argument("--types", nargs="*", default=list(ATTACKERS), choices=list(ATTACKERS))
    parser.add_argument("--train-limit", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--populations", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    kinds = [k for k in args.types if all(available(o) for o in ATTACKERS[k])]
    skipped = sorted(set(args.types) - set(kinds))
    if skipped:
        print(f"not in this vicious (config keys missing): {', '.join(skipped)}")
    settings = SuiteSettings()
    splits = load_dataset("fashion-mnist", image_size=32)
    print(f"data: {splits.source}; detector settings: {settings.model_dump()}", flush=True)
    populations = {}
    for p in args.populations:
        print(f"population {p}", flush=True)
        populations[p] = build_population(p, args.out, splits, settings, kinds, args.train_limit, args.epochs)
    shipped = Calibration.load(shipped_calibration("fashion-mnist"))
    report = {"settings": settings.model_dump(), "data_source": splits.source, "populations": {}}
    for p, records in populations.items():
        others = [q for q in populations if q != p]
        other = calibration_from(populations[others[0]], settings) if others else None
        for r in records:
            r["verdict_shipped"], r["verdicts_shipped"] = shipped.verdicts(primary(r))
            if other:
                r["verdict_other"], r["verdicts_other"] = other.verdicts(primary(r))
        rows = separation(records, kinds)
        print(f"\n## Population {p}: ROC AUC and TPR at 5% FPR, honest zoo vs each attacker type\n")
        print("| attacker | " + " | ".join(f"{d} AUC | {d} TPR@5%" for d in PRIMARY) + " |")
        print("|---|" + "---|---|" * len(PRIMARY))
        for kind in kinds:
            cells = [f"{row['auc']:.2f} | {row['tpr_at_5']:.2f}" for row in rows if row["attacker"] == kind]
            print(f"| {kind} | " + " | ".join(cells) + " |")
        key = "verdict_other" if other else "verdict_shipped"
        source = f"population {others[0]}'s honest zoo" if other else "the shipped calibration"
        print(f"\nverdicts under the thresholds of {source} (and of the shipped calibration):\n")
        print("| type | models | likely-vicious | inconclusive | likely-honest | shipped: likely-vicious | "
              + " | ".join(f"{d} alone: likely-vicious" for d in PRIMARY) + " |")
        print("|---|---|---|---|---|---|" + "---|" * len(PRIMARY))
        for kind in ["honest", *kinds]:
            chosen = [r for r in records if r["kind"] == kind]
            count = {v: sum(r[key] == v for r in chosen) for v in ("likely-vicious", "inconclusive", "likely-honest")}
            shipped_count = sum(r["verdict_shipped"] == "likely-vicious" for r in chosen)
            each = "verdicts_other" if other else "verdicts_shipped"
            alone = [sum(r[each].get(d) == "likely-vicious" for r in chosen) for d in PRIMARY]
            print(f"| {kind} | {len(chosen)} | {count['likely-vicious']} | {count['inconclusive']} | "
                  f"{count['likely-honest']} | {shipped_count} | " + " | ".join(str(a) for a in alone) + " |")
        print("\n| model | accuracy | own decoder PSNR | label-only PSNR | " + " | ".join(PRIMARY) + " | verdict |")
        print("|---|---|---|---|" + "---|" * len(PRIMARY) + "---|")
        for r in records:
            scores = " | ".join(f"{primary(r)[d]:.3f}" for d in PRIMARY)
            print(f"| {r['name']} | {r['accuracy']:.3f} | {r.get('decoder_psnr', float('nan')):.2f} | "
                  f"{r.get('label_only_psnr', float('nan')):.2f} | {scores} | {r[key]} |")
        report["populations"][p] = {"models": records, "separation": rows}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
