"""Measure the figures in docs/reliability.md: faults injected vs trials lost, workers vs trials/hour.

Run from the repository root with the project's environment:

    .venv/bin/python benchmarks/measure_reliability.py [--pg postgresql+psycopg2://postgres@127.0.0.1:5432/test]

It uses the sample corpus and a tiny model, writes under runs/reliability/ and prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

OUT = Path("runs/reliability")
TOML = """schemes = ["unweighted", "inverse_frequency", "balanced", "sqrt_inverse_frequency"]
[model]
hidden_size = 8
num_layers = 1
epochs = 8
batch_size = 16
learning_rate = 0.01
[pruner]
type = "none"
"""


def cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, "-m", "weight_tuner.cli", *args, "--sample-docs", "30",
                             "--cache-dir", str(OUT / "cache")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def states(url, name):
    try:
        return [t.state for t in optuna.load_study(study_name=name, storage=url).trials]
    except KeyError:
        return []


def fault_injection(n_faults: int, total: int, seed: int = 0) -> dict:
    """Kill -9 (or SIGINT) a tune run at random moments, rerun it each time, and count lost trials."""
    rng = random.Random(seed)
    url = f"sqlite:///{OUT}/faults.db"
    (OUT / "faults.db").unlink(missing_ok=True)
    args = ["tune", "--storage", url, "--study", "faults", "--trials", str(total), "--config", str(OUT / "tiny.toml"),
            "--heartbeat", "1"]
    injected = {"SIGKILL": 0, "SIGINT": 0}
    max_complete_seen = 0
    lost = 0
    for _ in range(n_faults):
        proc = cli(*args)
        time.sleep(rng.uniform(8, 25))
        if proc.poll() is not None:
            break
        sig = rng.choice([signal.SIGKILL, signal.SIGINT])
        proc.send_signal(sig)
        proc.wait()
        injected[sig.name] += 1
        complete = states(url, "faults").count(TrialState.COMPLETE)
        lost += max(0, max_complete_seen - complete)  # a finished trial that disappeared or changed state
        max_complete_seen = max(max_complete_seen, complete)
        time.sleep(3.5)
    proc = cli(*args)
    proc.wait()
    final = states(url, "faults")
    return {"faults_injected": injected, "finished_trials_lost": lost,
            "final_complete": final.count(TrialState.COMPLETE), "final_failed": final.count(TrialState.FAIL),
            "requested_total": total, "exit_code_of_final_run": proc.returncode}


def throughput(url: str, workers: int, total: int, name: str) -> dict:
    """Trials per hour with ``workers`` worker processes on one study."""
    first = cli("tune", "--storage", url, "--study", name, "--trials", "1", "--config", str(OUT / "tiny.toml"))
    first.wait()
    t0 = time.time()
    procs = [cli("worker", "--storage", url, "--study", name, "--trials", str(total), "--seed", str(i),
                 "--no-confirm") for i in range(workers)]  # the search alone, as measured before workers confirmed
    for p in procs:
        p.wait()
    seconds = time.time() - t0
    done = states(url, name).count(TrialState.COMPLETE)
    return {"workers": workers, "trials": done - 1, "seconds": seconds, "trials_per_hour": 3600 * (done - 1) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pg", default=None, help="PostgreSQL URL for the throughput figures")
    parser.add_argument("--faults", type=int, default=6)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "tiny.toml").write_text(TOML)
    result = {"fault_injection": fault_injection(args.faults, total=8)}
    if args.pg:
        stamp = int(time.time())
        result["postgresql_throughput"] = []
        for w in (1, 2):
            name = f"throughput-{w}-{stamp}"
            result["postgresql_throughput"].append(throughput(args.pg, w, 7, name))
            optuna.delete_study(study_name=name, storage=args.pg)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
