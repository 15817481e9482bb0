"""Where files live and how URLs are shown: a password never reaches a log, a message or a file we write."""

import pytest

from weight_tuner.paths import display_url, masked_command

from support import url_with_password

SECRET = "Pw@!x%41/"


def user_info(shown: str) -> str:
    """What a shown URL keeps between ``://`` and the host."""
    return shown.split("://", 1)[1].rsplit("@", 1)[0]


@pytest.mark.parametrize("url", [url_with_password(SECRET),
                                 url_with_password(SECRET, "db.example:5432/optuna", "postgresql+psycopg"),
                                 url_with_password("Pw%40x", "127.0.0.1/test")])
def test_display_url_hides_any_password_whole(url):
    shown = display_url(url)
    assert shown.startswith(url.split("://")[0] + "://") and user_info(shown) == "user:***"
    assert "Pw" not in shown and "!x" not in shown
    assert shown.endswith(url.rsplit("@", 1)[1])  # host, port and database stay readable


@pytest.mark.parametrize("url", ["sqlite:///studies/default.db", "sqlite:////tmp/a@b.db", "postgresql://user@h/db"])
def test_display_url_leaves_urls_without_a_password_alone(url):
    assert display_url(url) == url


def test_masked_command_hides_storage_urls_in_both_option_forms():
    line = masked_command(["bench", "--storage", url_with_password(SECRET, "h/db", user="u"),
                           "--storage=" + url_with_password(SECRET, "h/d", user="u"), "--data", "../shared/skol-corpus"])
    assert "Pw" not in line and line.count("u:" + "***@h/") == 2 and "--data ../shared/skol-corpus" in line
