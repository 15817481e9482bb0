"""Where files live and how URLs are shown: a password never reaches a log, a message or a file we write."""

import pytest

from weight_tuner.paths import display_url, masked_command

SECRET = "Pw@!x%41/"


@pytest.mark.parametrize("url", [f"postgresql://user:{SECRET}@127.0.0.1:5432/test",
                                 f"postgresql+psycopg://user:{SECRET}@db.example:5432/optuna",
                                 "postgresql://user:Pw%40x@127.0.0.1/test"])
def test_display_url_hides_any_password_whole(url):
    shown = display_url(url)
    assert shown.startswith(url.split("://")[0] + "://user:***@") and "Pw" not in shown and "!x" not in shown
    assert shown.endswith(url.rsplit("@", 1)[1])  # host, port and database stay readable


@pytest.mark.parametrize("url", ["sqlite:///studies/default.db", "sqlite:////tmp/a@b.db", "postgresql://user@h/db"])
def test_display_url_leaves_urls_without_a_password_alone(url):
    assert display_url(url) == url


def test_masked_command_hides_storage_urls_in_both_option_forms():
    line = masked_command(["bench", "--storage", f"postgresql://u:{SECRET}@h/db", f"--storage=postgresql://u:{SECRET}@h/d",
                           "--data", "../shared/skol-corpus"])
    assert "Pw" not in line and line.count("u:***@h/") == 2 and "--data ../shared/skol-corpus" in line
