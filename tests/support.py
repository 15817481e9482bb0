"""Helpers the test files share: the CLI in a subprocess, waiting on a study, a tiny study config, PostgreSQL."""

import json
import os
import socket
import subprocess
import sys
import time

import optuna
from optuna.trial import TrialState

# The README's form: a plain postgresql:// URL, whose driver SQLAlchemy chooses (psycopg 3 since 2.1).
PG_URL = os.environ.get("WEIGHT_TUNER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SAMPLE_DOCS = "30"


def url_with_password(password: str, where: str = "127.0.0.1:5432/test", scheme: str = "postgresql",
                      user: str = "user") -> str:
    """A storage URL holding ``password``, assembled here so that no such URL is written out in the tests."""
    return "".join([scheme, "://", user, ":", password, "@", where])


def one_line_error(capsys, argv) -> str:
    """Run ``weight-tuner ARGV`` in this process and check the contract for bad input: exit code 2 and one line on
    stderr after any progress lines, ``weight-tuner: error: ...``, with no traceback. Returns that line."""
    from weight_tuner.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1] if err else ""
    assert last.startswith("weight-tuner: error: ") and "Traceback" not in err, err[-2000:]
    assert [line for line in err.splitlines() if line.startswith("weight-tuner: error")] == [last], err[-2000:]
    return last


def study_toml(tmp_path, epochs=12, schemes=("unweighted", "inverse_frequency", "sqrt_inverse_frequency",
                                             "guide_iteration1_10_5_1")):
    """A study config file: a tiny model, ``epochs`` long, no pruner, the given schemes first."""
    path = tmp_path / "tiny.toml"
    path.write_text(f"schemes = {json.dumps(list(schemes))}\n[model]\nhidden_size = 8\nnum_layers = 1\n"
                    f"epochs = {epochs}\nbatch_size = 16\nwindow_size = 10\nprediction_stride = 5\n"
                    "learning_rate = 0.01\n[pruner]\ntype = \"none\"\n")
    return path


def cli(args, cache_dir, **kw):
    """``weight-tuner ARGS`` in a subprocess on the sample corpus, its output captured as text."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "weight_tuner.cli", *args, "--sample-docs", SAMPLE_DOCS, "--cache-dir", str(cache_dir)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def trials(url, name):
    """The study's trials, or none where it does not exist yet."""
    try:
        return optuna.load_study(study_name=name, storage=url).trials
    except KeyError:
        return []


def exportable_study(url, name="e"):
    """A study with one completed trial with weights: as much as `export` needs to get as far as writing."""
    study = optuna.create_study(study_name=name, storage=url)
    trial = study.ask()
    for c in ("Nomenclature", "Description"):
        trial.suggest_float(f"w_{c}", 0.1, 1000.0, log=True)
    trial.set_user_attr("class_weights", {"Nomenclature": 2.0, "Description": 1.0, "Misc": 1.0})
    study.tell(trial, 0.5)
    study.set_user_attr("search_space", {"nomenclature": [0.1, 1000.0], "description": [0.1, 1000.0]})
    study.set_user_attr("model_config", {})
    return study


def wait_for(predicate, proc, timeout=180, what="condition"):
    """Poll ``predicate`` until it holds; fail if ``proc`` exits first or ``timeout`` passes."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {what}: {proc.stderr.read()[-8000:]}")
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def running_mid_epoch(url, name, after_complete=0):
    """A predicate: a trial is running and has reported an epoch, after ``after_complete`` completed ones."""
    def check():
        ts = trials(url, name)
        done = sum(t.state == TrialState.COMPLETE for t in ts)
        return done >= after_complete and any(t.state == TrialState.RUNNING and t.intermediate_values for t in ts)
    return check


def pg_server_answers() -> bool:
    """Whether something listens at the test URL's host and port (no driver involved)."""
    import sqlalchemy

    url = sqlalchemy.engine.make_url(PG_URL)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=2):
            return True
    except OSError:
        return False


def pg_available() -> bool:
    """Whether the test PostgreSQL server accepts a connection through SQLAlchemy's default driver."""
    try:
        import sqlalchemy

        with sqlalchemy.create_engine(PG_URL).connect():
            return True
    except Exception:
        return False


def drop_pg_studies(prefix: str) -> None:
    """Delete every study on the test server whose name starts with ``prefix`` (a test's own)."""
    for summary in optuna.study.get_all_study_summaries(PG_URL, include_best_trial=False):
        if summary.study_name.startswith(prefix):
            optuna.delete_study(study_name=summary.study_name, storage=PG_URL)


class SharedStudy:
    """The suite's one finished study, made by ``tune`` as a user runs it (search, confirmation, test check,
    2 refits) on the tiny sample corpus. Tests read it in place; a test that changes anything works on
    :meth:`copy`. Its members' artifact store stays the original's (the study records it by absolute path)."""

    NAME = "shared"

    def __init__(self, root):
        self.root = root
        self.url = f"sqlite:///{root}/shared.db"
        self.toml = root / "shared.toml"
        self.corpus = root.parent / f"{root.name}-new-docs"  # 3 documents to label, outside the study's folder
        self.cache = root.parent / f"{root.name}-cache"

    @property
    def folder(self):
        """The study's own folder: models, members, report."""
        return self.root / self.NAME

    def tune_args(self, url=None, refits="2"):
        """The ``tune`` command line that made the study (on ``url``, by default its own storage)."""
        from conftest import TINY_DOCS

        return ["tune", "--sample-docs", str(TINY_DOCS), "--cache-dir", str(self.cache), "--config", str(self.toml),
                "--trials", "4", "--study", self.NAME, "--storage", url or self.url, "--folds", "2", "--repeats", "1",
                "--confirm-top", "2", "--refits", refits, "--jobs", "1"]

    def build(self):
        """Run ``tune`` and write the documents to label; called once per test session."""
        from conftest import TINY_MODEL
        from weight_tuner.cli import main

        self.root.mkdir(parents=True, exist_ok=True)
        model = "\n".join(f"{k} = {json.dumps(v)}" for k, v in TINY_MODEL.items())
        self.toml.write_text(f"[model]\n{model}\n")
        assert main(self.tune_args()) == 0
        assert main(["sample", "-o", str(self.corpus), "--docs", "3", "--seed", "11"]) == 0

    def copy(self, dest):
        """A copy of the study's database and folder at ``dest``, to change freely."""
        import shutil

        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.root / "shared.db", dest / "shared.db")
        shutil.copytree(self.folder, dest / self.NAME)
        shutil.copy(self.toml, dest / "shared.toml")
        other = SharedStudy(dest)
        other.corpus, other.cache = self.corpus, self.cache
        return other

    def study(self):
        return optuna.load_study(study_name=self.NAME, storage=self.url)


def companion_of(url, study):
    """The confirmation's companion study of a study made by `tune`."""
    return optuna.load_study(study_name=study.user_attrs["confirmation_study"], storage=url)


def tunes_at_once(url, name, tmp_path, cache_dir, processes=3):
    """Start ``processes`` `tune` on one study that does not exist yet; every one must finish, on one study made
    once. Returns each process's (stdout, stderr)."""
    toml = study_toml(tmp_path, epochs=2, schemes=("unweighted", "inverse_frequency", "sqrt_inverse_frequency"))
    argv = ["tune", "--storage", url, "--study", name, "--config", str(toml), "--trials", "4", "--folds", "2",
            "--repeats", "1", "--confirm-top", "1", "--refits", "1", "--jobs", "1"]
    procs = [cli(argv, cache_dir, cwd=tmp_path) for _ in range(processes)]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    study = optuna.load_study(study_name=name, storage=url)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    schemes = [t.user_attrs.get("scheme") for t in done]
    assert len(done) == 4
    assert sorted(schemes) == ["inverse_frequency", "search", "sqrt_inverse_frequency", "unweighted"]  # each once
    # A process that found the last trial already taken (a race) ends its own as surplus, untrained, and gives
    # its parameters back to the queue; nothing else is left over.
    for t in study.trials:
        if t.state != TrialState.COMPLETE:
            assert (t.state == TrialState.FAIL and t.user_attrs.get("surplus")) or t.state == TrialState.WAITING, t
    decisions = {out.split("Recommendation: ", 1)[1].splitlines()[0] for out, _ in outs}
    assert len(decisions) == 1  # one decision, printed alike by all
    companion = companion_of(url, study)
    pairs = [(t.user_attrs["candidate"], t.user_attrs["unit"]) for t in companion.trials
             if t.state == TrialState.COMPLETE]
    assert len(pairs) == len(set(pairs))  # no unit run trained twice
    return outs
