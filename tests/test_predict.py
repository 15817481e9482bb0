"""Predict on new files, the sequence rules, oversampling and the multi-objective mode."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from optuna.trial import TrialState

from weight_tuner.cli import main
from weight_tuner.predict import apply_sequence_rules, to_yedda, tune_sequence_threshold
from weight_tuner.sample import generate_corpus
from weight_tuner.search.run import tune
from weight_tuner.space import StudyConfig
from weight_tuner.windows import build_windows, oversample_windows

from conftest import TINY_DOCS
from support import one_line_error

N, D, M = 0, 1, 2


def rows(*ps):
    return np.array(ps, dtype=np.float32)


def test_rule_extends_description_after_nomenclature():
    probs = rows([0.9, 0.05, 0.05], [0.1, 0.35, 0.55], [0.05, 0.6, 0.35], [0.0, 0.1, 0.9])
    assert list(probs.argmax(1)) == [N, M, D, M]
    assert list(apply_sequence_rules(probs, 0.3)) == [N, D, D, M]  # line 3 is too unlikely Description
    assert list(apply_sequence_rules(probs, 0.4)) == [N, M, D, M]  # 0.35 < 0.4: unchanged
    assert list(apply_sequence_rules(probs, 1.01)) == list(probs.argmax(1))  # rules off


def test_rule_fills_a_single_misc_gap_inside_a_description():
    probs = rows([0.0, 0.9, 0.1], [0.0, 0.2, 0.8], [0.0, 0.9, 0.1])
    assert list(apply_sequence_rules(probs, 0.15)) == [D, D, D]
    assert list(apply_sequence_rules(probs, 0.25)) == [D, M, D]


def test_rule_does_not_touch_misc_after_misc():
    probs = rows([0.0, 0.1, 0.9], [0.0, 0.45, 0.55])
    assert list(apply_sequence_rules(probs, 0.3)) == [M, M]


def test_threshold_tuning_picks_rules_off_when_they_hurt():
    probs = rows([0.9, 0.05, 0.05], [0.1, 0.35, 0.55])
    t_help, _ = tune_sequence_threshold(probs, np.array([N, D]))
    t_hurt, _ = tune_sequence_threshold(probs, np.array([N, M]))
    assert t_help <= 0.35 and t_hurt > 1


def test_to_yedda_merges_runs_into_blocks_and_writes_every_other_line_as_it_was():
    assert to_yedda(["a", "b", "c", ""], [1, 2, 3], np.array([D, D, M])) == "[@a\nb#Description*]\n[@c#Misc*]\n"
    # a blank line ends a block; unlabelled lines, indentation and a CR stay; the markup goes before the CR
    source = ["  a", "", "b\r", "c", "not read", "d"]
    out = to_yedda(source, [1, 3, 4, 6], np.array([D, D, D, M]))
    assert out.split("\n") == ["[@  a#Description*]", "", "[@b\r", "c#Description*]", "not read", "[@d#Misc*]"]
    from weight_tuner.corpus import parse_yedda

    assert parse_yedda(out, "x").text == "\n".join(source)  # without the markup, the input again


def test_oversampling_repeats_only_documents_with_nomenclature():
    offsets = np.array([0, 6, 12])
    y = np.array([2, 0, 2, 2, 2, 2] + [2] * 6)  # only the first document has a Nomenclature line
    win = build_windows(offsets, 3, 3, pad_index=12)
    out = oversample_windows(win, offsets, y, rare_class=0, factor=3)
    assert len(out) == len(win) + 2 * 2
    assert (out[len(win):] < 6).all()


@pytest.mark.parametrize("label_map", [None, '{"Diagnosis": "Description"}'])
def test_predict_reproduces_train_stats_on_held_out_files(prepared, tmp_path, cache_dir, capsys, label_map):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"hidden_size": 8, "num_layers": 1, "epochs": 3, "batch_size": 8,
                               "learning_rate": 0.01, "verbosity": 0}))
    model = tmp_path / "m.keras"
    stats_file = tmp_path / "stats.json"
    mapping = ["--label-map", label_map] if label_map else []
    assert main(["train", "--config", str(cfg), "--sample-docs", str(TINY_DOCS), "--cache-dir", str(cache_dir),
                 "--out", str(stats_file), "--save-model", str(model), *mapping]) == 0
    trained = json.loads(stats_file.read_text())
    texts = generate_corpus(TINY_DOCS)
    files = []
    for chunk_id in trained["split"]["test"]:
        doc_id = chunk_id.split("#")[0]
        path = tmp_path / "held_out" / doc_id.split("/")[-1]
        path.parent.mkdir(exist_ok=True)
        path.write_text(texts[doc_id])
        files.append(str(path))
    # The mapped run matters only if held-out files hold the remapped label: predict must score
    # them with the model's own mapping, not the default one.
    assert not label_map or any("#Diagnosis*]" in open(f).read() for f in files)
    out_json = tmp_path / "pred.json"
    assert main(["predict", "--model", str(model), *files, "-o", str(tmp_path / "out"), "--probs",
                 "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    for key in ("important_f1", "Nomenclature_f1", "Description_f1", "accuracy", "Misc_loss"):
        assert result["stats"][key] == pytest.approx(trained["test_stats"][key], abs=1e-5)
    assert result["stats"]["confusion_matrix"] == trained["test_stats"]["confusion_matrix"]
    first = result["files"][files[0]]
    pred_text = open(first["output"]).read()
    assert pred_text.startswith("[@") and "#Misc*]" in pred_text
    with open(first["probs_csv"]) as fh:
        rows_ = list(csv.DictReader(fh))
    assert len(rows_) == first["lines"] and abs(sum(float(rows_[0][f"p_{c}"]) for c in ("Nomenclature",
               "Description", "Misc")) - 1) < 1e-4
    # plain text is labelled too
    plain = tmp_path / "plain.txt"
    plain.write_text("Agaricus pallidus Singer, sp. nov.\nPileus 3-5 µm, convex, brown.\n")
    assert main(["predict", "--model", str(model), str(plain)]) == 0
    assert (tmp_path / "plain.pred.txt.ann").read_text().count("[@") >= 1


def test_multi_objective_study_and_export_picks_best_important_f1(prepared, tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/mo.db"
    cfg = StudyConfig(model={"hidden_size": 6, "num_layers": 1, "epochs": 2, "batch_size": 16, "verbosity": 0,
                             "learning_rate": 0.01}, schemes=["unweighted", "inverse_frequency"],
                      objectives=["nomenclature_f1", "description_f1"])
    study = tune(prepared, storage, "mo", 3, cfg)
    assert len(study.directions) == 2
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 3 and all(len(t.values) == 2 for t in done)
    assert all(t.values == [t.user_attrs["val_Nomenclature_f1"], t.user_attrs["val_Description_f1"]] for t in done)
    out = tmp_path / "mo.json"
    assert main(["export", "--study", "mo", "--storage", storage, "-o", str(out)]) == 0
    payload = json.loads(out.read_text())
    best = max(done, key=lambda t: t.user_attrs["val_important_f1"])
    assert payload["trial_number"] == best.number and payload["pareto_front"]
    other = [t for t in done if t.number != best.number][0]
    assert main(["export", "--study", "mo", "--storage", storage, "-o", str(out), "--trial", str(other.number)]) == 0
    assert json.loads(out.read_text())["trial_number"] == other.number
    assert main(["report", "--study", "mo", "--storage", storage]) == 0
    page = (tmp_path / "mo" / "report.html").read_text()
    assert 'id="figure-tradeoff"' in page and 'id="figure-history"' in page


def test_a_bundles_label_map_is_checked_and_defaults_when_absent(tmp_path):
    from weight_tuner.corpus import DataError
    from weight_tuner.bundles import load_label_map

    model = tmp_path / "m.keras"
    assert load_label_map(model)("Diagnosis") == "Misc"  # a bundle saved before mappings were recorded
    (tmp_path / "m.labels.json").write_text('{"Diagnosis": "Desc"}')
    with pytest.raises(DataError, match=r"m\.labels\.json: 'Diagnosis' maps to 'Desc'"):
        load_label_map(model)
    (tmp_path / "m.labels.json").write_text('{"Diagnosis": "Description"}')
    assert load_label_map(model)("Diagnosis") == "Description"


def test_models_with_dense_rows_still_predict(prepared, tmp_path):
    """A model built before rows were sparse (a dense `lines` input and a Masking layer) loads and
    predicts; its batches are densified."""
    import keras

    from weight_tuner.model import WeightedCategoricalCrossentropy
    from weight_tuner.predict import predict_files, read_input
    from weight_tuner.config import ModelConfig
    from weight_tuner.bundles import save_bundle

    featurizer = prepared.featurizer
    n = featurizer.n_features
    inputs = keras.Input(shape=(None, n), name="lines")
    x = keras.layers.Masking(mask_value=0.0)(inputs)
    x = keras.layers.Dense(6, activation="relu", name="projection")(x)
    x = keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True))(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile(optimizer="adam", loss=WeightedCategoricalCrossentropy(None))
    cfg = ModelConfig.from_dict({"window_size": 10, "prediction_stride": 5, "batch_size": 8})
    save_bundle(model, featurizer, cfg, tmp_path / "old.keras")
    ann = tmp_path / "doc.txt.ann"
    ann.write_text(next(iter(generate_corpus(3, 2).values())), encoding="utf-8")
    result = predict_files(tmp_path / "old.keras", [ann], out_dir=tmp_path / "out", probs_csv=True)
    read = read_input(ann)
    lines = read.texts
    assert result["files"][str(ann)]["lines"] == len(lines) > 10
    with open(result["files"][str(ann)]["probs_csv"], encoding="utf-8") as fh:
        got = np.array([[float(r[f"p_{c}"]) for c in ("Nomenclature", "Description", "Misc")]
                        for r in csv.DictReader(fh)])
    # the same numbers as the model on the dense rows of the whole file (one window covers a short file)
    rows = featurizer.transform_rows(lines, None, read.line_nos, pad_row=False)  # one file, its blank lines
    dense = rows.csr().toarray().astype(np.float32)[None]
    first = model.predict(dense[:, :10], verbose=0)[0]
    np.testing.assert_allclose(got[:3], first[:3], atol=2e-6)


# --------------------------------------------------------------------------- labelling an archive

@pytest.fixture(scope="module")
def tiny_bundle(prepared, tmp_path_factory):
    from weight_tuner.train import train_model
    from weight_tuner.bundles import save_bundle

    from conftest import tiny_config

    cfg = tiny_config(epochs=1)
    model, _ = train_model(prepared, cfg)
    path = tmp_path_factory.mktemp("bundle") / "m.keras"
    save_bundle(model, prepared.featurizer, cfg, path)
    return path


def _archive(root, names=("J1/V1/s1.txt.ann", "J1/V2/s1.txt.ann")):
    """Files named alike in two volumes, as SKOL's archive is laid out (JOURNAL/VOLUME/sN.txt.ann)."""
    docs = list(generate_corpus(len(names), 4).values())
    paths = []
    for name, text in zip(names, docs):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def test_predict_writes_every_input_line_back_and_counts_the_labels(tiny_bundle, tmp_path, capsys):
    """Plain text and .ann in, every line back out, byte for byte once the labels' markup is removed: blank
    lines, indentation, a CRLF line and unlabelled lines of the .ann included (a 19-line file used to come back as
    10 lines, its blank lines dropped and paragraphs of different classes merged)."""
    from weight_tuner.corpus import parse_yedda

    ann = _archive(tmp_path / "in", names=("J/V/a.txt.ann",))[0]
    ann.write_text("A line outside every block\n\n" + ann.read_text(encoding="utf-8"), encoding="utf-8")
    lines = parse_yedda(ann.read_text(encoding="utf-8"), "a").text.split("\n")
    plain = tmp_path / "in" / "b.txt"
    plain.write_bytes(("\n".join(["", "  " + lines[4], "", *lines[5:12], "windows line\r", "", ""]) + "\n").encode())
    out = tmp_path / "out"
    assert main(["predict", "--model", str(tiny_bundle), str(ann), str(plain), "-o", str(out),
                 "--json", str(tmp_path / "p.json")]) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "p.json").read_text())
    for source, text in ((ann, parse_yedda(ann.read_text(encoding="utf-8"), "a").text),
                         (plain, plain.read_bytes().decode())):
        entry = results["files"][str(source)]
        written = Path(entry["output"]).read_bytes().decode()
        assert parse_yedda(written, "o").text == text  # every line, in order, as it was
        assert len(written.split("\n")) == len(text.split("\n"))
        assert sum(entry["labels"].values()) == entry["lines"] == len(parse_yedda(written, "o").lines)
        assert f"{entry['lines']} lines (Nomenclature {entry['labels']['Nomenclature']}, " in printed
    assert results["labels"] == {c: sum(e["labels"][c] for e in results["files"].values()) for c in results["labels"]}
    assert "all 2 files: " in printed


def test_same_named_files_of_two_volumes_get_two_outputs(tiny_bundle, tmp_path, capsys):
    a, b = _archive(tmp_path / "in")
    out, js = tmp_path / "out", tmp_path / "r.json"
    assert main(["predict", "--model", str(tiny_bundle), str(a), str(b), "-o", str(out), "--json", str(js)]) == 0
    result = json.loads(js.read_text())
    assert set(result["files"]) == {str(a), str(b)}
    outputs = {entry["output"] for entry in result["files"].values()}
    assert outputs == {str(out / "V1" / "s1.pred.txt.ann"), str(out / "V2" / "s1.pred.txt.ann")}
    # each output holds its own input's lines (not the other volume's)
    for path, entry in result["files"].items():
        got = open(entry["output"], encoding="utf-8").read()
        assert got.count("\n") == open(path).read().count("\n") and got.split("\n")[0][2:12] in open(path).read()
    assert result["throughput"]["lines"] == sum(e["lines"] for e in result["files"].values()) > 0
    assert result["throughput"]["lines_per_second"] > 0


def test_a_folder_input_labels_every_file_below_it_in_a_stable_order(tiny_bundle, tmp_path):
    from weight_tuner.predict import predict_files

    root = tmp_path / "archive"
    files = _archive(root, ("J1/V1/s1.txt.ann", "J1/V2/s1.txt.ann", "J2/V9/s2.txt.ann"))
    (root / "J1" / "notes.md").write_text("not an input")
    first = predict_files(tiny_bundle, [root])
    assert list(first["files"]) == [str(f) for f in sorted(files)]
    assert all(Path(e["output"]).parent == Path(p).parent for p, e in first["files"].items())
    # earlier predictions below the folder are outputs, never inputs
    again = predict_files(tiny_bundle, [root])
    assert list(again["files"]) == list(first["files"])


def test_two_inputs_for_one_output_are_refused_before_anything_is_written(tiny_bundle, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    text = next(iter(generate_corpus(1, 5).values()))
    (folder / "x.txt.ann").write_text(text)
    (folder / "x.txt").write_text("Agaricus campestris L.\n")
    err = one_line_error(capsys, ["predict", "--model", str(tiny_bundle), str(folder), "-o", str(tmp_path / "out")])
    assert "x.txt and" in err and "would both write" in err
    assert not (tmp_path / "out").exists()


def test_reader_warnings_name_the_path_not_just_the_file_name(tiny_bundle, tmp_path, caplog):
    from weight_tuner.predict import predict_files

    a, b = _archive(tmp_path / "in")
    b.write_text(b.read_text(encoding="utf-8") + "[@an unclosed block\n", encoding="utf-8")
    with caplog.at_level("WARNING"):
        predict_files(tiny_bundle, [a, b])
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned and all(m.startswith(f"{b}:") for m in warned)  # V2's s1, not "s1.txt.ann"


def test_an_interrupted_run_leaves_no_half_written_output(tiny_bundle, tmp_path, monkeypatch):
    from weight_tuner import paths, predict

    a, b = _archive(tmp_path / "in")
    out = tmp_path / "out"
    predict.predict_files(tiny_bundle, [a, b], out_dir=out)
    earlier = {p: p.read_bytes() for p in out.rglob("*.pred.txt.ann")}
    real_yedda, real_fsync, synced = predict.to_yedda, paths.os.fsync, []

    def interrupted(fd):
        synced.append(fd)
        if len(synced) == 2:
            raise KeyboardInterrupt  # Ctrl-C once the second file's new bytes are written, before they are in place
        return real_fsync(fd)

    monkeypatch.setattr(predict, "to_yedda", lambda *args: "changed\n" + real_yedda(*args))
    monkeypatch.setattr(paths.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        predict.predict_files(tiny_bundle, [a, b], out_dir=out)
    monkeypatch.undo()
    assert len(synced) == 2 and not list(out.rglob("*.tmp"))
    first, second = sorted(earlier)
    assert first.read_bytes().startswith(b"changed\n")  # the first file was labelled again
    assert second.read_bytes() == earlier[second]  # the earlier run's output, whole: not the new bytes


def test_an_input_that_is_not_a_regular_file_is_named_so(tmp_path):
    from weight_tuner.errors import DataError
    from weight_tuner.predict import read_input

    with pytest.raises(DataError, match="input file /dev/zero is not a regular file"):
        read_input(Path("/dev/zero"))
    with pytest.raises(DataError, match="does not exist"):
        read_input(tmp_path / "missing.txt")
