"""The release table: what a release policy keeps from a server that knows it.

For every finished run trained through a policy (``release.policy=...``; vicious or
autoencoder regime) the table finds its *blind* partner, the run with the same settings and
seed trained with ``release.policy=none``, and shows, per policy:

* (a) ``blind``: the blind pair's decoder fed the released outputs;
* (b) ``decoder retrained``: the blind pair's decoder fine-tuned on released outputs of
  the server's training images (``vicious.defences.release_evaluation.release_arms``, kept in
  the blind run's ``release/<policy>.json``, so only the first table computes it);
* (c) ``trained through``: the pair trained with the policy between F and G;
* ``label only``: the floor, each test image replaced by the mean training image of the
  class the released vector names.

Beside them, the ``purifier`` family: a user's purifier (``vicious.defences.purifier``, after
Yang et al. 2020) fitted on each blind run's validation images, against servers (a) and (b);
a server cannot train through a purifier it has never seen.

One table and one accuracy-against-PSNR figure per policy family (top-k, rounding,
temperature, noise, label-only), means ± sample std over seeds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from vicious.defences.release_evaluation import purifier_arms, release_arms
from vicious.release.policies import parse_policy
from vicious.studies.table import (
    ACCURACY,
    LABEL_ONLY,
    PSNR,
    R_PRINCIPAL,
    REID1,
    SSIM,
    Column,
    RunRecord,
    Stat,
    Table,
    dataset_rank,
    settings_of,
)

ARMS = ("blind (a)", "decoder retrained (b)", "trained through (c)", LABEL_ONLY)
NO_POLICY = "no policy"  # the blind pair's own measures, first in every table
MEASURES = (ACCURACY, PSNR, SSIM, R_PRINCIPAL, REID1)
_TRAINS_THROUGH = ("vicious", "autoencoder")
#: Distortion weights of the purifiers measured beside the policies (0: hide all it can).
PURIFIER_WEIGHTS = (0.0, 0.1)


def _stats(measured: Sequence[dict]) -> list[Stat | None]:
    """Mean ± sd of each of ``MEASURES`` over dicts laid out as ``metrics.json``."""
    stats = []
    for measure in MEASURES:
        numbers = [v for v in (measure.finite_value(m) for m in measured) if v is not None]
        stats.append(Stat.of(numbers) if numbers else None)
    return stats


def _release(record: RunRecord) -> str:
    return str(record.metrics.get("release") or "none")


def _blind_partner(record: RunRecord, records: Sequence[RunRecord], keys: Sequence[str]) -> RunRecord | None:
    same = (record.dataset, record.num_outputs, record.output, record.regime, record.seed, settings_of(record, keys))
    found = [r for r in records if _release(r) == "none"
             and (r.dataset, r.num_outputs, r.output, r.regime, r.seed, settings_of(r, keys)) == same]
    return found[0] if len(found) == 1 else None


def release_measurements(records: Sequence[RunRecord], keys: Sequence[str], *, retrain_epochs: int = 2) -> list[dict]:
    """One dict per trained-through run with a blind partner: its group (dataset, output,
    settings), policy, family, and per arm the measures of ``metrics.json``."""
    keys = [k for k in keys if not k.startswith("release.")]
    found, blinds = [], {}
    for record in records:
        if record.regime not in _TRAINS_THROUGH or _release(record) == "none":
            continue
        blind = _blind_partner(record, records, keys)
        if blind is None:
            continue
        policy = parse_policy(_release(record))
        arms = release_arms(blind.path, policy, retrain_epochs=retrain_epochs)
        floor = {**(record.metrics.get("label_only") or {}), "accuracy": record.metrics.get("accuracy")}
        found.append({
            "group": (record.dataset, record.output, settings_of(record, keys)), "policy": policy.name,
            "family": policy.family,
            "arms": dict(zip(ARMS, (arms["blind"], arms["retrained"], record.metrics, floor))),
            "blind": blind,
        })
        blinds[blind.path] = blind
    for blind in blinds.values():
        for weight in PURIFIER_WEIGHTS:
            arms = purifier_arms(blind.path, weight, retrain_epochs=retrain_epochs)
            found.append({"group": (blind.dataset, blind.output, settings_of(blind, keys)),
                          "policy": arms["policy"], "family": "purifier", "blind": blind,
                          "arms": {ARMS[0]: arms["blind"], ARMS[1]: arms["retrained"], LABEL_ONLY: arms["label_only"]
                                   | {"accuracy": arms["blind"].get("accuracy")}}})
    return found


def release_tables(records: Sequence[RunRecord], keys: Sequence[str], *, retrain_epochs: int = 2) -> list[Table]:
    """One ``release-<family>`` table per policy family, or none without trained-through runs."""
    measured = release_measurements(records, keys, retrain_epochs=retrain_epochs)
    settings = [k for k in keys if not k.startswith("release.")]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for m in measured:
        groups[(m["family"], m["group"], m["policy"])].append(m)
    tables = []
    for family in sorted({m["family"] for m in measured}):
        rows = []
        chosen = sorted((g for g in groups if g[0] == family), key=lambda g: (dataset_rank(g[1][0]), g[1], g[2]))
        for group in dict.fromkeys(g[1] for g in chosen):
            # The blind pairs without any policy: what every row is measured against.
            blind = list({m["blind"].path: m["blind"] for m in measured if m["group"] == group}.values())
            rows.append([group[0], group[1], *group[2], "none", NO_POLICY, len(blind),
                         *_stats([b.metrics for b in blind])])
        for _, (dataset, output, values), policy in chosen:
            runs = groups[(family, (dataset, output, values), policy)]
            for arm in ARMS:
                if any(arm not in r["arms"] for r in runs):
                    continue  # no server trains through a user's purifier
                rows.append([dataset, output, *values, policy, arm, len(runs), *_stats([r["arms"][arm] for r in runs])])
        columns = [Column("dataset", "dataset"), Column("output", "output"), *(Column(k, k) for k in settings),
                   Column("policy", "policy"), Column("arm", "server"), Column("seeds", "seeds"),
                   *(Column(m.key, m.title, m.fmt) for m in MEASURES)]
        notes = [f"Policies of the {family} family against three servers: (a) the vicious pair trained blind, its "
                 f"decoder fed released outputs; (b) that decoder fine-tuned {retrain_epochs} epochs on released "
                 "outputs of the server's training images; (c) F and G trained through the policy "
                 "(release.policy=...; straight-through gradients for label-only and rounding). label only: the "
                 "floor of the released labels. Mean ± sample std over seeds; R principal on the subspace of 90% "
                 "of pixel variance."]
        if family == "purifier":
            notes = [f"A user's purifier (after Yang et al. 2020) fitted on the blind pair's validation images with "
                     "distortion weight W (purifier-W; 0 hides all it can), keeping the predicted label, against (a) "
                     f"the blind decoder and (b) that decoder fine-tuned {retrain_epochs} epochs on purified outputs "
                     "of the server's training images; label only: the floor. Mean ± sample std over seeds."]
        tables.append(Table(f"release-{family}", f"Release policy {family}: a server that knows it", columns,
                            rows, notes))
    return tables


def release_points(table: Table) -> list[dict]:
    """The points of ``vicious.figures.release_policy_curves`` for one release table."""
    index = {c.key: i for i, c in enumerate(table.columns)}
    return [{"arm": row[index["arm"]], "policy": row[index["policy"]], "output": row[index["output"]],
             "accuracy": row[index["accuracy"]].mean, "psnr": row[index["psnr"]].mean}
            for row in table.rows if row[index["accuracy"]] is not None and row[index["psnr"]] is not None]
