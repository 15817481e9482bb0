"""The `train` command: config errors fail fast with one line; a real run writes its stats."""

import json
import subprocess
import sys

import numpy as np
import pytest

from weight_tuner.cli import main
from weight_tuner.config import ConfigError, validate_config

from conftest import TINY_DOCS


@pytest.mark.parametrize("config,weights,message", [
    ({"hidden_sise": 8}, None, "unknown config key 'hidden_sise'"),
    ({}, '{"Nomenclature": 0, "Description": 1, "Misc": 1}', "'Nomenclature']: weight must be finite and > 0"),
    ({}, '{"Nomenclature": -3, "Description": 1, "Misc": 1}', "weight must be finite and > 0"),
    ({}, '{"Nomenclature": NaN, "Description": 1, "Misc": 1}', "got nan"),
    ({}, '{"Nomenclature": Infinity, "Description": 1, "Misc": 1}', "got inf"),
    ({}, '{"Nomenclature": 100, "Description": 10, "Misc-exposition": 0.1}', "'Misc-exposition' is not a class"),
    ({}, '{"Nomenclature": 100, "Description": 10}', "missing a weight for class 'Misc'"),
    ({}, '{"Nomenclature": 1, "Description": 1, "Misc": 1', "invalid JSON at line 1"),
    ({"window_size": 0}, None, "window_size: expected an integer >= 1"),
])
def test_config_errors_exit_2_with_one_line(tmp_path, capsys, config, weights, message):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config))
    out = tmp_path / "stats.json"
    argv = ["train", "--config", str(cfg), "--out", str(out), "--cache-dir", str(tmp_path / "c")]
    if weights is not None:
        argv += ["--weights", weights]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists() and not (tmp_path / "c").exists()  # nothing featurised, nothing trained


def test_class_absent_from_training_split_is_an_error(tmp_path, capsys):
    for i in range(4):
        (tmp_path / f"d{i}.txt.ann").write_text("[@intro text#Misc-exposition*]\n[@Pileus 3 mm#Description*]\n")
    assert main(["train", "--data", str(tmp_path), "--cache-dir", "", "--out", str(tmp_path / "o.json")]) == 2
    assert "'Nomenclature' is absent from the training split" in capsys.readouterr().err


def test_weights_keys_are_validated_directly():
    with pytest.raises(ConfigError, match="not a class"):
        validate_config({"class_weights": {"Misc": 1, "Nomenclature": 1, "Description": 1, "Key": 2}})
    assert validate_config({"class_weights": {"Misc": 1, "Nomenclature": 2, "Description": 3}})["class_weights"] == {
        "Nomenclature": 2.0, "Description": 3.0, "Misc": 1.0}


def test_a_model_config_is_made_by_keyword_and_validated_however_it_is_made():
    """Issue 47, 5: ModelConfig(...) took positional arguments and validated nothing; only from_dict checked."""
    from weight_tuner.config import ModelConfig

    with pytest.raises(TypeError):
        ModelConfig("rnn", 15)  # noqa: the point: positional arguments are refused
    for bad, message in (({"hidden_size": 0}, "hidden_size: expected an integer >= 1"),
                         ({"dropout": 1.5}, "dropout: expected a number in"),
                         ({"window_size": 4, "prediction_stride": 5}, "must not exceed window_size"),
                         ({"class_weights": {"Misc": 1}}, "class_weights")):
        with pytest.raises(ConfigError, match=message):
            ModelConfig(**bad)
    made = ModelConfig(class_weights={"Misc": 1, "Description": 3, "Nomenclature": 2}, dropout=0)
    assert list(made.class_weights) == ["Nomenclature", "Description", "Misc"] and made.dropout == 0.0
    assert made == ModelConfig.from_dict(made.as_dict())


def test_console_script_exit_code_and_message(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "weight_tuner.cli", "train", "--weights", '{"Misc": 1}'],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    # one line: TensorFlow was imported (train needs it) without its start-up log
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr[-2000:]
    assert proc.stderr.startswith("weight-tuner: error: class_weights")


def test_train_writes_val_and_test_stats(tmp_path, cache_dir, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"hidden_size": 8, "num_layers": 1, "epochs": 1, "batch_size": 16, "verbosity": 1}))
    out = tmp_path / "stats.json"
    rc = main(["train", "--config", str(cfg), "--sample-docs", str(TINY_DOCS), "--cache-dir", str(cache_dir),
               "--weights", '{"Nomenclature": 4, "Description": 2, "Misc": 1}', "--out", str(out)])
    assert rc == 0
    captured = capsys.readouterr()
    assert "[BiLSTM] Using weighted loss with class weights:" in captured.err
    assert "important_f1" in captured.out
    payload = json.loads(out.read_text())
    for split, name in (("val_stats", "val"), ("test_stats", "test")):
        s = payload[split]
        assert s["important_f1"] == pytest.approx((s["Nomenclature_f1"] + s["Description_f1"]) / 2)
        counts = payload["class_counts"][name]
        assert s["Misc_support"] == counts["Misc"] and sum(map(sum, s["confusion_matrix"])) == sum(counts.values())
        assert s["Description_loss"] > 0
    assert payload["model_config"]["class_weights"] == {"Nomenclature": 4.0, "Description": 2.0, "Misc": 1.0}
    assert set(payload["split"]) == {"train", "val", "test"}
    assert not set(payload["split"]["train"]) & set(payload["split"]["test"])


def test_feature_cache_is_hit_and_keyed_by_data(tmp_path):
    from weight_tuner.train import prepare

    first = prepare(None, sample_docs=12, cache_dir=tmp_path)
    second = prepare(None, sample_docs=12, cache_dir=tmp_path)
    other = prepare(None, sample_docs=13, cache_dir=tmp_path)
    assert not first.cache_hit and second.cache_hit and not other.cache_hit
    assert first.fingerprint == second.fingerprint != other.fingerprint
    a, b = first.splits["train"], second.splits["train"]
    # The cache round-trips the sparse rows exactly, and reads them back memory-mapped.
    assert isinstance(b.rows.data, np.memmap) and b.rows.nnz == a.rows.nnz > 0
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(a.rows, name), getattr(b.rows, name))
    np.testing.assert_array_equal(a.dense(), b.dense())
    assert len(list(tmp_path.glob("features-*"))) == 2


def test_label_map_changes_classes_and_fingerprint(tmp_path, capsys):
    from weight_tuner.train import prepare

    plain = prepare(None, sample_docs=12, cache_dir=None)
    mapped = prepare(None, sample_docs=12, cache_dir=None, label_map={"Diagnosis": "Description"})
    total = lambda p, c: sum(p.class_counts[s][c] for s in p.class_counts)  # noqa: E731
    assert total(mapped, "Description") > total(plain, "Description")
    assert total(mapped, "Misc") < total(plain, "Misc")
    assert mapped.fingerprint != plain.fingerprint
    assert main(["train", "--label-map", '{"Diagnosis": "Desc"}', "--out", str(tmp_path / "o.json")]) == 2
    assert "'Diagnosis' maps to 'Desc'" in capsys.readouterr().err
