"""The dashboard view: optuna-dashboard, served with the study's decision above its first card.

optuna-dashboard's study page opens on History, Importance and Timeline; its "Best Trial" card shows
the highest validation score, which is not what a study recommends when the confirmation found no
weights better than none, and the ``decision`` user attribute comes only below those cards. The page
is optuna-dashboard's own, unchanged; this module adds one bar above it that shows the decision (or,
on a confirmation's companion study, which study holds it), read from the study's user attributes
through the dashboard's own API, so the bar and the attributes cannot disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPT_PATH = "/weight-tuner/decision-bar.js"
# Served as a file from the same origin: the dashboard's Content-Security-Policy refuses inline scripts.
_TAG = f'<script defer src="{SCRIPT_PATH}"></script>'.encode()
_SCRIPT = (Path(__file__).with_name("decision_bar.js")).read_bytes


def with_decision_bar(app):
    """Wrap optuna-dashboard's WSGI ``app``: its HTML pages load the decision bar's script, served here."""

    def wrapped(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == SCRIPT_PATH:
            body = _SCRIPT()
            start_response("200 OK", [("Content-Type", "text/javascript; charset=utf-8"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        if not path.startswith("/dashboard"):
            return app(environ, start_response)
        seen: dict = {}

        def capture(status, headers, exc_info=None):
            seen.update(status=status, headers=headers)
            return lambda data: None

        body = b"".join(app(environ, capture))
        headers = seen["headers"]
        if any(k.lower() == "content-type" and "text/html" in v for k, v in headers):
            body = body.replace(b"</head>", _TAG + b"</head>", 1)
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(body))))
        start_response(seen["status"], headers)
        return [body]

    return wrapped


def serve(storage_url: str, host: str, port: int) -> None:
    """Serve optuna-dashboard on ``storage_url`` with the decision bar until interrupted."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from optuna_dashboard import wsgi
    from optuna_dashboard._cli import ThreadedWSGIServer  # what `optuna-dashboard` itself serves with

    from .storage import check_storage

    class Quiet(WSGIRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 (the base class's name) - one line per request is noise
            pass

    check_storage(storage_url, must_exist=True, connect=True)
    # The URL, not our storage object: ours takes SQLite's write lock at every transaction, and the
    # dashboard's polling must not hold it while trials are written.
    app = with_decision_bar(wsgi(storage_url))
    httpd = make_server(host, port, app, server_class=ThreadedWSGIServer, handler_class=Quiet)
    print(f"dashboard: http://{host}:{port}/dashboard (Ctrl-C to stop)", file=sys.stderr)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:  # how a dashboard is meant to stop: not an interrupted job, nothing to resume
        print("dashboard stopped", file=sys.stderr)
    finally:
        httpd.server_close()
