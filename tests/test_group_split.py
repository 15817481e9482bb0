"""Splits by journal or volume: whole groups held out, named in every result and in the fingerprint."""

import json
import shutil

import numpy as np
import optuna
import pytest

from weight_tuner import corpus
from weight_tuner.cli import main
from weight_tuner.errors import DataError
from weight_tuner.folds import (FOLD_SEED, MAX_FOLD_RATIO, Unit, balanced_folds, check_fold_count, chunk_group,
                                fold_of_pieces, make_units, unit_data)
from weight_tuner.sample import generate_corpus

from support import companion_of, study_toml

# Sample documents laid out as journals and volumes, the way ../shared/skol-corpus is.
LAYOUT = {"Alpha/Vol001": 3, "Alpha/Vol002": 3, "Alpha/Vol003": 2, "Beta/Vol010": 3, "Beta/Vol011": 2,
          "Gamma/Vol020": 3}


def grouped_texts() -> dict[str, str]:
    texts = list(generate_corpus(sum(LAYOUT.values()), 5).values())
    out, i = {}, 0
    for folder, n in LAYOUT.items():
        for _ in range(n):
            out[f"{folder}/doc{i:03d}.ann"] = texts[i]
            i += 1
    return out


def grouped_chunks():
    docs, _ = corpus.read_texts(grouped_texts())
    return corpus.chunk_documents(docs, 60)  # several chunks per document


def groups_in(split, by):
    return {name: {corpus.group_of(cid.rsplit("#", 1)[0], by) for cid in ids} for name, ids in split.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_volume_split_puts_each_volume_in_one_split(seed):
    chunks = grouped_chunks()
    split, spec = corpus.split_groups(chunks, "volume", seed=seed)
    seen = groups_in(split, "volume")
    assert all(seen[name] for name in corpus.SPLITS)
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
    assert sorted(c for ids in split.values() for c in ids) == sorted(c.chunk_id for c in chunks)
    assert seen["test"] == set(spec["test_groups"]) and seen["val"] == set(spec["val_groups"])


def test_a_journal_split_holds_the_named_journal_out_of_train_and_val():
    chunks = grouped_chunks()
    split, spec = corpus.split_groups(chunks, "journal", test_groups=["Beta"])
    seen = groups_in(split, "journal")
    assert seen["test"] == {"Beta"} and "Beta" not in seen["train"] | seen["val"]
    assert spec == {"by": "journal", "seed": 0, "test_groups": ["Beta"], "val_groups": None,
                    "train_groups": ["Alpha", "Gamma"]}  # two journals left: validation takes chunks of them
    assert split["val"] and not set(split["val"]) & set(split["train"])


def test_a_group_that_does_not_exist_or_a_flat_folder_is_an_error():
    with pytest.raises(DataError, match=r"--test-group 'Delta': no such journal in the corpus; journals: "
                                        r"Alpha, Beta, Gamma"):
        corpus.split_groups(grouped_chunks(), "journal", test_groups=["Delta"])
    flat, _ = corpus.read_texts({"doc1.ann": next(iter(generate_corpus(1, 0).values()))})
    with pytest.raises(DataError, match="doc1.ann is not inside a journal folder"):
        corpus.split_groups(corpus.chunk_documents(flat), "journal")
    with pytest.raises(DataError, match="at least one must stay out of the test split"):
        corpus.split_groups(grouped_chunks(), "journal", test_groups=["Alpha", "Beta", "Gamma"])


@pytest.fixture(scope="module")
def grouped_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("journals")
    for name, text in grouped_texts().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_cli_errors_for_groups_are_one_line_exit_2(grouped_dir, tmp_path, capsys):
    out = tmp_path / "stats.json"
    for args, message in ((["--split-by", "journal", "--test-group", "Delta"], "no such journal"),
                          (["--test-group", "Beta"], "--test-group needs --split-by")):
        assert main(["train", "--data", str(grouped_dir), *args, "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1] and err[-1].startswith("weight-tuner: error:"), err
        assert not [line for line in err if "Traceback" in line]
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(next(grouped_dir.rglob("*.ann")), flat / "one.ann")
    assert main(["train", "--data", str(flat), "--split-by", "volume", "-o", str(out)]) == 2
    assert "a flat directory can only be split by chunk" in capsys.readouterr().err
    assert not out.exists()


def test_the_split_is_in_the_results_and_the_fingerprint(grouped_dir, tmp_path, cache_dir):
    from weight_tuner.train import prepare

    by_chunk = prepare(grouped_dir, cache_dir=cache_dir)
    beta = prepare(grouped_dir, split_by="journal", test_groups=["Beta"], cache_dir=cache_dir)
    gamma = prepare(grouped_dir, split_by="journal", test_groups=["Gamma"], cache_dir=cache_dir)
    assert len({by_chunk.fingerprint, beta.fingerprint, gamma.fingerprint}) == 3
    assert beta.meta()["split_by"]["test_groups"] == ["Beta"] and by_chunk.meta()["split_by"] == {"by": "chunk"}
    assert all(cid.startswith("Beta/") for cid in beta.chunk_ids["test"])
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"hidden_size": 4, "num_layers": 1, "epochs": 1, "verbosity": 0}))
    out = tmp_path / "stats.json"
    assert main(["train", "--data", str(grouped_dir), "--split-by", "journal", "--test-group", "Beta",
                 "--config", str(config), "--cache-dir", str(cache_dir), "-o", str(out)]) == 0
    stats = json.loads(out.read_text())
    assert stats["split_by"]["test_groups"] == ["Beta"] and stats["data_fingerprint"] == beta.fingerprint
    assert stats["test_stats"]["Nomenclature_support"] == beta.class_counts["test"]["Nomenclature"]


def test_the_transfer_benchmark_holds_out_each_journal_in_turn(grouped_dir, tmp_path, cache_dir):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"hidden_size": 4, "num_layers": 1, "epochs": 1, "verbosity": 0}))
    md, raw = tmp_path / "bench.md", tmp_path / "bench.json"
    md.write_text("# Benchmarks\n\nkept\n")
    assert main(["bench", "--data", str(grouped_dir), "--config", str(config), "--seeds", "0", "--transfer-only",
                 "--cache-dir", str(cache_dir), "-o", str(md), "--json", str(raw)]) == 0
    result = json.loads((tmp_path / "bench_transfer.json").read_text())
    assert list(result["settings"]) == ["chunk split", "test on Alpha", "test on Beta", "test on Gamma",
                                        "held-out volume (one drawn per seed)"]
    volume = result["settings"]["held-out volume (one drawn per seed)"]
    assert len(volume["split_by"]["test_groups"]) == 1 and volume["split_by"]["test_groups"][0] in LAYOUT
    assert set(volume["rows"]) == {"unweighted", "linear per-line (no context)"}
    for name in ("Alpha", "Beta", "Gamma"):
        setting = result["settings"][f"test on {name}"]
        assert setting["split_by"]["test_groups"] == [name] and name not in setting["split_by"]["train_groups"]
        assert set(setting["rows"]) == {"unweighted", "linear per-line (no context)"}
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\nkept\n") and "| test on Beta |" in text
    assert "Mean over the held-out directions: unweighted" in text and "| held-out volume (one drawn per seed) |" in text
    assert not raw.exists()  # the main benchmark did not run


# --------------------------------------------------------------------------- units of whole groups

@pytest.fixture(scope="module")
def grouped_prepared(grouped_dir, cache_dir):
    from weight_tuner.train import prepare

    return prepare(grouped_dir, cache_dir=cache_dir)


@pytest.mark.parametrize("by", ["volume", "journal"])
def test_a_group_unit_trains_on_no_line_of_the_groups_it_scores(grouped_prepared, by):
    p = grouped_prepared
    non_test = set(p.splits["train"].chunk_ids) | set(p.splits["val"].chunk_ids)
    for unit in make_units(3, 2):
        data = unit_data(p, unit, 3, by)
        trained = {chunk_group(c, by) for c in data.train.chunk_ids}
        scored = {chunk_group(c, by) for c in data.val.chunk_ids}
        assert scored and not trained & scored
        assert set(data.train.chunk_ids) | set(data.val.chunk_ids) == non_test
        assert not set(data.train.index[:-1].tolist()) & set(data.val.index[:-1].tolist())  # rows, not only names
    # every process, and every resume, cuts the same folds
    assert (fold_of_pieces(p, 3, 1, by) == fold_of_pieces(p, 3, 1, by)).all()
    # by chunk, a chunk's document or volume lands on both sides: what group units prevent
    by_chunk = unit_data(p, Unit(0, 0), 3)
    assert {chunk_group(c, "volume") for c in by_chunk.train.chunk_ids} & \
        {chunk_group(c, "volume") for c in by_chunk.val.chunk_ids}


def test_folds_of_whole_groups_are_balanced_in_lines():
    sizes = np.array([54, 30, 21, 12, 10, 5, 3, 1, 1]) * 1000  # as uneven as SKOL's volumes (1 to 54 files)
    partitions = set()
    for repeat in range(4):
        fold = balanced_folds(sizes, 3, np.random.default_rng([FOLD_SEED, repeat]))
        totals = np.bincount(fold, weights=sizes, minlength=3)
        assert totals.max() <= MAX_FOLD_RATIO * totals.min(), (repeat, totals)
        partitions.add(frozenset(frozenset(np.flatnonzero(fold == k).tolist()) for k in range(3)))
    assert len(partitions) > 1  # repeats cut differently where more than one balanced cut exists


def test_too_few_groups_for_the_folds_is_one_line(grouped_dir, tmp_path, cache_dir, capsys):
    with pytest.raises(DataError, match=r"2 non-test volumes \(A/v1, A/v2\) cannot be cut into 3 folds"):
        check_fold_count(["A/v1/d.ann#0", "A/v1/e.ann#0", "A/v2/f.ann#0"], 3, "volume")
    url = f"sqlite:///{tmp_path}/g.db"
    assert main(["tune", "--data", str(grouped_dir), "--split-by", "journal", "--test-group", "Beta",
                 "--units-by", "journal", "--storage", url, "--study", "g", "--cache-dir", str(cache_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "2 non-test journals (Alpha, Gamma) cannot be cut into 3 folds" in err[-1], err
    assert err[-1].startswith("weight-tuner: error:") and not [line for line in err if "Traceback" in line]
    assert not (tmp_path / "g.db").exists() or "g" not in optuna.get_all_study_names(url)


def test_a_study_confirmed_on_volume_units_says_so_and_resumes_on_the_same_units(grouped_dir, tmp_path,
                                                                                    cache_dir, capsys):
    url = f"sqlite:///{tmp_path}/v.db"
    args = ["tune", "--data", str(grouped_dir), "--storage", url, "--study", "v", "--trials", "2", "--config",
            str(study_toml(tmp_path, epochs=1, schemes=("unweighted", "inverse_frequency"))), "--folds", "2",
            "--repeats", "1", "--units-by", "volume", "--refits", "0", "--no-racing", "--cache-dir", str(cache_dir)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 folds of whole volumes x 1 repeats" in out
    study = optuna.load_study(study_name="v", storage=url)
    plan = companion_of(url, study).user_attrs["plan"]
    assert plan["units_by"] == "volume" and study.user_attrs["recommendation"]["units_by"] == "volume"
    assert study.user_attrs["evaluation"]["units_by"] == "volume"
    assert main(args) == 0  # resumed: the same plan, nothing trained again
    assert companion_of(url, optuna.load_study(study_name="v", storage=url)).user_attrs["plan"]["id"] == plan["id"]
    capsys.readouterr()
    assert main([a if a != "volume" else "chunk" for a in args]) == 2
    assert "--units-by" in capsys.readouterr().err
    # The same search confirmed again on chunk units: unit r0f0 names other rows now, so no run is carried over
    study = optuna.load_study(study_name="v", storage=url)
    study.set_user_attr("evaluation", dict(study.user_attrs["evaluation"], units_by="chunk"))
    assert main([a if a != "volume" else "chunk" for a in args]) == 0
    chunk = companion_of(url, optuna.load_study(study_name="v", storage=url))
    assert chunk.user_attrs["plan"]["units_by"] == "chunk" and chunk.user_attrs["plan"]["id"] != plan["id"]
    assert not [t for t in chunk.trials if "reused_from" in t.user_attrs]
