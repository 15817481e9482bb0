"""No secret leaves the process: a storage password never reaches a file a command writes, nor its output.
The same test races three `tune` on one new PostgreSQL study (the SQLite race is in test_workers).

The server trusts local connections, so a URL with any password connects; the password holds ``@``,
``!`` and ``%`` (percent-encoded in the URL, as SQLAlchemy needs them).
"""

import json
import os
import time
from pathlib import Path

import optuna
import pytest
from sqlalchemy.engine import make_url

from weight_tuner.cli import main

from support import PG_URL, SAMPLE_DOCS, drop_pg_studies, pg_available, tunes_at_once

SECRET = "Zq@7!x%9k"


def _leaks(text: bytes) -> list[str]:
    """The forms of the password found in ``text``: raw, percent-encoded, or its distinctive middle (5 bytes: 3 would turn up by chance in a model's weights)."""
    encoded = SECRET.replace("%", "%25").replace("@", "%40")
    return [form for form in (SECRET, encoded, "7!x%9") if form.encode() in text]


@pytest.mark.skipif(not pg_available(), reason=f"no PostgreSQL server at {PG_URL} (a password needs a server URL)")
def test_two_tunes_at_once_on_postgresql_then_every_command_and_no_password_anywhere(tmp_path, monkeypatch,
                                                                                       capsys):
    """Two `tune` started at once on a new PostgreSQL study (each finishes, each scheme trained once), then
    `report`, `export`, `predict` and `bench` on it: no output, file or stored attribute holds the password."""
    monkeypatch.chdir(tmp_path)  # default outputs (studies/, docs/) land here, and are scanned
    url = make_url(PG_URL).set(password=SECRET).render_as_string(hide_password=False)
    name = f"wt-secret-{os.getpid()}-{int(time.time() * 1000)}"
    data = ["--sample-docs", SAMPLE_DOCS, "--cache-dir", str(tmp_path / "cache")]
    doc = tmp_path / "in.txt"
    doc.write_text("Agaricus bisporus (J.E. Lange) Imbach\nPileus 3-5 cm, convex.\n")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"hidden_size": 4, "num_layers": 1, "epochs": 1, "verbosity": 0}))
    try:
        for out, err in tunes_at_once(url, name, tmp_path, tmp_path / "cache", processes=2):  # a new cache, at once
            assert not _leaks((out + err).encode()), "tune"
        commands = [
            ["report", "--storage", url, "--study", name],
            ["export", "--storage", url, "--study", name],
            ["predict", "--storage", url, "--study", name, str(doc), "-o", str(tmp_path / "labelled"),
             "--json", str(tmp_path / "predicted.json")],
            ["bench", "--storage", url, "--study", name, "--config", str(config), "--seeds", "0", "--no-scaling",
             "-o", str(tmp_path / "bench.md"), "--json", str(tmp_path / "bench.json"), *data],
        ]
        for argv in commands:
            assert main(argv) == 0, argv[0]
            out = capsys.readouterr()
            assert not _leaks((out.out + out.err).encode()), argv[0]
        written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "tiny.toml"]
        names = {p.name for p in written}
        assert {"bench.md", "bench.json", f"{name}-best.json", "report.html", "predicted.json"} <= names, names
        assert "--storage" in (tmp_path / "bench.md").read_text()  # the command is written, masked
        assert [str(p) for p in written if _leaks(p.read_bytes())] == []
        stored, storage = [], optuna.storages.RDBStorage(PG_URL)  # nor the studies' own records
        for summary in optuna.study.get_all_study_summaries(storage, include_best_trial=False):
            if summary.study_name.startswith(name):  # the study and its companions (confirmation, refits)
                study = optuna.load_study(study_name=summary.study_name, storage=storage)
                system = storage.get_study_system_attrs(storage.get_study_id_from_name(summary.study_name))
                stored.append(json.dumps([study.user_attrs, system], default=str))
                stored += [json.dumps([t.user_attrs, t.system_attrs], default=str) for t in study.trials]
        assert len(stored) > 5 and not any(_leaks(s.encode()) for s in stored)  # attrs, notes, trials
    finally:
        drop_pg_studies(name)


def test_the_leak_check_finds_each_form():
    assert _leaks(b"x " + SECRET.encode()) and _leaks(b"u:Zq%407!x%259k@h") and _leaks(b"u:***7!x%9")
    assert not _leaks(b"postgresql://postgres:***@127.0.0.1:5432/test")
    assert Path(__file__).read_text().count(SECRET) == 1  # the test writes it once, here


QUERY_SECRET = "Qy7!pass%21word"


def test_a_password_in_the_query_or_with_a_raw_at_is_masked_in_every_form():
    from weight_tuner.paths import display_url, scrub, url_secrets

    query = "postgresql://postgres@127.0.0.1:5432/test?sslmode=prefer&password=" + QUERY_SECRET
    assert QUERY_SECRET not in display_url(query) and "password=***" in display_url(query)
    assert "sslmode=prefer" in display_url(query)
    assert {QUERY_SECRET, "Qy7!pass!word"} <= set(url_secrets(query))  # as written and decoded
    raw = "postgresql://postgres:" + SECRET + "@127.0.0.1:5999/db"
    # a driver that stops at the first '@' repeats the rest of the password as the host
    driver = "could not translate host name \"7!x%9k@127.0.0.1\" to address"
    assert not _leaks(scrub(driver, url_secrets(raw)).encode()) and not _leaks(display_url(raw).encode())
    assert url_secrets("sqlite:///studies/x.db") == [] and url_secrets("postgresql://u@h/db") == []


@pytest.mark.parametrize("url", [
    "postgresql://postgres@127.0.0.1:5999/db?password=" + QUERY_SECRET,  # nothing listens on 5999
    "postgresql://postgres:" + SECRET + "@127.0.0.1:5999/db",  # a raw '@': refused before any driver sees it
])
@pytest.mark.parametrize("command", ["export", "tune"])
def test_a_storage_error_says_one_line_and_no_form_of_the_password(url, command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([command, "--study", "s", "--storage", url]) == 2
    out = capsys.readouterr()
    err = out.err.strip().splitlines()
    assert err[-1].startswith("weight-tuner: error: storage postgresql://postgres") and len(err) == 1, err
    for form in (QUERY_SECRET, "Qy7!pass!word", "7!x%9"):
        assert form not in out.out + out.err
    assert not any(tmp_path.rglob("*"))  # nothing written
