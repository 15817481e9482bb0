"""What racing's shortened no-weights candidate cost the deployed model (issue 44, 3): a study whose
confirmation trained no weights on every unit, scored as deployed (every unit) and as a raced plan would
have deployed it (the units the decision needed), on the test split.

    python benchmarks/measure_raced_deployment.py DATA STORAGE_URL STUDY [CACHE_DIR]

DATA is the study's corpus folder (it is read and split as the study was, with its default split).
For both sets of units: the calibration (the members' fits averaged), the test important_f1 of the refits
under it, and of the members' ensemble under it; plus the seconds of the unit runs past the decision's
units (what training them cost). Prints one JSON object.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import optuna

from weight_tuner import logs

logs.configure(0)
logs.import_tensorflow(0)

from weight_tuner.artifacts import fetch_members, members_dir  # noqa: E402
from weight_tuner.confirm.deployed import deployed_calibration  # noqa: E402
from weight_tuner.confirm.plan import race_of, results  # noqa: E402
from weight_tuner.deploy.ensemble import ensemble_probs  # noqa: E402
from weight_tuner.deploy.refits import refit_paths  # noqa: E402
from weight_tuner.metrics import compute_stats  # noqa: E402
from weight_tuner.paths import models_dir  # noqa: E402
from weight_tuner.posthoc import Calibration  # noqa: E402
from weight_tuner.storage import stored_recommendation  # noqa: E402
from weight_tuner.train import prepare  # noqa: E402


def main() -> None:
    data, url, name = sys.argv[1], sys.argv[2], sys.argv[3]
    cache = sys.argv[4] if len(sys.argv) > 4 else None
    study = optuna.load_study(study_name=name, storage=url)
    rec = stored_recommendation(study)
    companion = optuna.load_study(study_name=rec.confirmation_study, storage=url)
    plan = companion.user_attrs["plan"]
    counted = race_of(companion, plan, rec.test_train_ratio)
    needed = counted.base_units or len(plan["units"])
    finished = results(companion)
    members = list(rec.deployed.members)
    extra = [finished[(rec.deployed.candidate, u)].user_attrs["seconds"] for u in plan["units"][needed:]
             if (rec.deployed.candidate, u) in finished]
    test = prepare(data, cache_dir=cache).splits["test"]
    models = models_dir(url, name)
    bundles = fetch_members(members, models / "members", members_dir(url, name))
    refits = refit_paths(models, (rec.deployed.refit or {}).get("models", 0))
    out = {"study": name, "decision": rec.decision, "units": len(plan["units"]), "decision_needed_units": needed,
           "seconds_of_the_runs_past_them": round(float(np.sum(extra)), 1),
           "seconds_of_all_unit_runs": round(float(sum(t.user_attrs["seconds"] for t in finished.values())), 1)}
    for label, used in (("every unit", members), ("the decision's units", members[:needed])):
        fit = deployed_calibration(used, rec.decision)
        calibration = Calibration.from_dict(fit) if fit else None
        row = {"members": len(used), "temperature": round(calibration.temperature, 4) if calibration else None,
               "ensemble_test_important_f1": round(float(compute_stats(
                   test.y, ensemble_probs(bundles[:len(used)], test, rec.multipliers, calibration))["important_f1"]), 4)}
        if refits:
            row["refits_test_important_f1"] = round(float(compute_stats(
                test.y, ensemble_probs(refits, test, rec.multipliers, calibration))["important_f1"]), 4)
        out[label] = row
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
