"""Nothing corrupt is trusted: each stored artifact kind, damaged in turn, is rebuilt or refused with one line.

One finished tiny study (its own feature cache, so that damaging it touches no other test); each test
damages one file, runs the command that reads it, checks the outcome, and puts the file back.
"""

import json
import shutil
import sqlite3
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest

from weight_tuner.cli import main
from weight_tuner.sample import generate_corpus

from support import SAMPLE_DOCS, study_toml

EXIT_USAGE = 2


class Finished:
    """A finished study made by `tune`, and the commands run on it."""

    def __init__(self, root: Path):
        self.root = root
        self.url = f"sqlite:///{root}/s.db"
        self.cache = root / "cache"
        self.toml = study_toml(root, epochs=2, schemes=("unweighted", "inverse_frequency"))
        self.doc = root / "doc.txt.ann"
        self.doc.write_text(next(iter(generate_corpus(3, 2).values())), encoding="utf-8")

    def tune(self):
        return main(["tune", "--storage", self.url, "--study", "s", "--config", str(self.toml), "--trials", "3",
                     "--folds", "2", "--repeats", "1", "--confirm-top", "1", "--refits", "1",
                     "--sample-docs", SAMPLE_DOCS, "--cache-dir", str(self.cache)])

    def predict(self, *extra):
        out = self.root / "out"
        shutil.rmtree(out, ignore_errors=True)
        return main(["predict", "--study", "s", "--storage", self.url, str(self.doc), "-o", str(out), *extra])

    def study(self):
        return optuna.load_study(study_name="s", storage=self.url)

    @property
    def models(self) -> Path:
        return self.root / "s" / "models"

    def member(self) -> dict:
        return self.study().user_attrs["recommendation"]["deployed"]["ensemble"]["members"][0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    f = Finished(tmp_path_factory.mktemp("integrity"))
    assert f.tune() == 0
    assert f.predict("--use", "ensemble") == 0  # unpacks the members once
    return f


@contextmanager
def damaged(path: Path, how: str = "truncate"):
    """``path`` damaged for the duration of the block (truncated to half, or its second half zeroed at the
    same size), then restored byte for byte."""
    backup = path.read_bytes()
    half = len(backup) // 2
    path.write_bytes(backup[:half] if how == "truncate" else backup[:half] + bytes(len(backup) - half))
    try:
        yield
    finally:
        path.write_bytes(backup)


def one_error_line(capsys, *names):
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("weight-tuner: error:")]
    assert len(err) == 1, err
    for name in names:
        assert name in err[0], err[0]
    return err[0]


def cache_files(f: Finished):
    (folder,) = [p for p in f.cache.iterdir() if p.name.startswith("features-")]
    return folder


@pytest.mark.parametrize("how", ["zero", "truncate"])
def test_a_damaged_feature_cache_is_rebuilt_and_scores_do_not_change(finished, caplog, how):
    before = finished.study().user_attrs["test_stats"]
    with damaged(cache_files(finished) / "data.npy", how):
        assert finished.tune() == 0
    assert "feature cache" in caplog.text and "computing the features again" in caplog.text
    assert finished.study().user_attrs["test_stats"] == before  # scored again on intact features: the same


def test_a_rescore_that_differs_stops_and_keeps_the_stored_test_scores(finished, capsys):
    from weight_tuner.deploy.testcheck import check_rescore

    study = finished.study()
    stored = study.user_attrs["test_stats"]
    now = json.loads(json.dumps(stored))
    now["unweighted"]["stats"]["important_f1"] = 0.0  # what the zeroed cache used to produce, with exit 0
    with pytest.raises(Exception, match=r"unweighted model scores 0\.0000 on the test split now"):
        check_rescore(study, stored, now)
    assert finished.study().user_attrs["test_stats"] == stored


def test_a_damaged_split_file_is_written_again_from_the_matching_split(finished, caplog):
    split = finished.study().user_attrs["split"]
    path = finished.root / "s" / "members" / split["artifact_id"]
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    assert finished.tune() == 0
    assert "split.json" in caplog.text and path.read_bytes() == good


def test_a_damaged_search_model_is_refused_by_name(finished, capsys):
    number = finished.study().user_attrs["recommendation"]["trial"] or 0
    before = finished.study().user_attrs["test_stats"]
    with damaged(finished.models / f"trial-{number}.keras"):
        assert finished.predict("--use", "single") == EXIT_USAGE
        one_error_line(capsys, f"trial-{number}.keras", "corrupt")
        assert finished.tune() == EXIT_USAGE  # the test check would load it: refused, nothing rewritten
        one_error_line(capsys, f"trial-{number}.keras")
        assert not (finished.root / "out").exists()
    assert finished.study().user_attrs["test_stats"] == before


def test_a_damaged_refit_is_refused_by_predict_and_retrained_by_tune(finished, capsys, caplog):
    refit = finished.models / "refit.keras"
    with damaged(refit, "zero"):
        assert finished.predict() == EXIT_USAGE
        one_error_line(capsys, "refit.keras", "SHA-256")
        assert finished.tune() == 0  # retrained, not "kept"
        assert "refits are trained again" in caplog.text
        assert finished.predict() == 0  # the new refit passes its manifest


def test_a_damaged_member_artifact_is_refused_and_leaves_nothing_behind(finished, capsys):
    member = finished.member()
    unpacked = finished.models / "members" / member["artifact_id"]
    shutil.rmtree(unpacked)  # so that the artifact is read
    artifact = Path(member["store"]) / member["artifact_id"]
    with damaged(artifact):
        assert finished.predict("--use", "ensemble") == EXIT_USAGE
        one_error_line(capsys, member["artifact_id"], "corrupt")
        assert not unpacked.exists()
        assert not [p for p in unpacked.parent.iterdir() if p.name.startswith(".")]  # no half-unpacked leftovers
    assert finished.predict("--use", "ensemble") == 0  # the artifact back: it works again, nothing to clean


def test_a_damaged_unpacked_member_is_unpacked_again_from_its_artifact(finished, caplog):
    member = finished.member()
    bundle = finished.models / "members" / member["artifact_id"] / "member.keras"
    assert finished.predict("--use", "ensemble") == 0
    good = bundle.read_bytes()
    bundle.write_bytes(good[:100])
    assert finished.predict("--use", "ensemble") == 0
    assert "unpacking member" in caplog.text and bundle.read_bytes() == good


def _edit_recommendation(f: Finished, edit) -> str:
    """Rewrite the recommendation's row in the SQLite file; returns the row as it was."""
    con = sqlite3.connect(f.root / "s.db")
    (old,) = con.execute("SELECT value_json FROM study_user_attributes WHERE key='recommendation'").fetchone()
    con.execute("UPDATE study_user_attributes SET value_json=? WHERE key='recommendation'", (edit(old),))
    con.commit()
    con.close()
    return old


@pytest.mark.parametrize("edit", [
    lambda row: row.replace('"decision": "', '"decision": "x', 1),  # valid JSON, another meaning
    lambda row: row[: len(row) // 2],  # not JSON at all
    lambda row: json.dumps({k: v for k, v in json.loads(row).items() if k != "checksum"}).replace(
        '"decision": "', '"decision": "x', 1),  # the checksum deleted, then the row edited (issue 44, 5)
], ids=["edited", "truncated", "checksum-deleted"])
def test_an_edited_recommendation_row_is_refused_and_the_export_kept(finished, capsys, edit):
    export = finished.root / "best.json"
    assert main(["export", "--study", "s", "--storage", finished.url, "-o", str(export)]) == 0
    good_export = export.read_bytes()
    old = _edit_recommendation(finished, edit)
    try:
        assert main(["export", "--study", "s", "--storage", finished.url, "-o", str(export)]) == EXIT_USAGE
        one_error_line(capsys, "'s'")
        assert finished.predict() == EXIT_USAGE
        one_error_line(capsys, "'s'")
        assert export.read_bytes() == good_export
    finally:
        _edit_recommendation(finished, lambda row: old)


def test_a_pickled_featurizer_is_never_unpickled(finished, tmp_path, capsys):
    """A bundle of the old format whose featurizer would run code when unpickled: refused, nothing runs."""
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    src = finished.models / "trial-0.keras"
    bundle = tmp_path / "old.keras"
    shutil.copy(src, bundle)
    shutil.copy(src.with_suffix(".config.json"), tmp_path / "old.config.json")
    (tmp_path / "old.featurizer.pkl").write_bytes(pickle.dumps(Payload()))
    assert main(["predict", "--model", str(bundle), str(finished.doc), "-o", str(tmp_path / "out")]) == EXIT_USAGE
    one_error_line(capsys, "old.keras", "pickled featurizer")
    assert not marker.exists()
    pickle.loads((tmp_path / "old.featurizer.pkl").read_bytes())  # the payload is live: unpickling would have run it
    assert marker.exists()


def test_the_cache_check_reads_the_bytes_not_only_the_sizes(finished):
    from weight_tuner.errors import IntegrityError
    from weight_tuner.paths import check_manifest

    folder = cache_files(finished)
    size = (folder / "data.npy").stat().st_size
    with damaged(folder / "data.npy", "zero"):
        assert (folder / "data.npy").stat().st_size == size  # only the bytes differ
        with pytest.raises(IntegrityError, match=r"data\.npy is corrupt \(its SHA-256 differs"):
            check_manifest(folder / "manifest.json", "feature cache")
    check_manifest(folder / "manifest.json", "feature cache")
