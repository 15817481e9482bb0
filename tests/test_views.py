"""The user's views of a study: the analysis notebook, optuna-dashboard's API, and the page in Chromium."""

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from optuna.trial import TrialState

from weight_tuner.storage import stored_recommendation


NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "analyze_study.ipynb"


@pytest.fixture(scope="module")
def view_study(shared_study):
    """The suite's shared study, as every view reads it."""
    return shared_study.url, shared_study.study()


def test_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert "parameters" in code[0]["metadata"]["tags"]


@pytest.fixture(scope="module")
def executed_notebook(view_study, tmp_path_factory):
    import nbformat
    from nbclient import NotebookClient

    storage, _ = view_study
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells[1].source = f"STORAGE = {storage!r}\nSTUDY = 'shared'"
    path = tmp_path_factory.mktemp("notebook")
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path)}}).execute()
    return nb


def test_notebook_runs_headless_against_a_tiny_study(executed_notebook):
    nb = executed_notebook
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)
    text = "\n".join(json.dumps(o) for c in code for o in c.outputs)
    assert "unweighted" in text and "Use " in text and "95% interval [" in text  # the recommendation section
    first = next(o for c in code for o in c.outputs)
    assert "<p" in first["data"]["text/html"] and "Recommendation: " in first["data"]["text/html"]  # first output
    # Printed text wraps anywhere in a notebook ("racin g"): a sentence is HTML, a printed line fits 100 columns.
    printed = [line for c in code for o in c.outputs if o.get("output_type") == "stream" for line in
               o["text"].splitlines()]
    assert printed and max(len(line) for line in printed) <= 100, max(printed, key=len)
    assert 'model_config[\\"class_weights\\"] = ' in text  # what to paste
    figures = [c for c in code if "figure" in c.metadata.get("tags", [])]
    assert len(figures) == 6
    for cell in figures:  # a static image under every figure cell, nothing that needs a live kernel
        assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.source
    assert "TqdmWarning" not in text and "application/vnd.plotly" not in text


def test_notebook_exported_by_nbconvert_shows_every_figure(executed_notebook):
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(executed_notebook)
    figures = [c for c in executed_notebook.cells if "figure" in c.metadata.get("tags", [])]
    assert len(re.findall(r'<img[^>]*src="data:image/png;base64,', body)) >= len(figures)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dashboard(view_study):
    storage, study = view_study
    port = _free_port()  # `make dashboard`'s command: optuna-dashboard with the decision bar
    proc = subprocess.Popen([sys.executable, "-m", "weight_tuner.cli", "dashboard", "--storage", storage,
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{base}/api/studies", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"optuna-dashboard exited: {proc.stderr.read()[-1000:]}")
            time.sleep(0.5)
    yield base, study
    proc.terminate()
    proc.wait(timeout=10)


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_dashboard_api_shows_study_trials_attrs_and_best_note(dashboard):
    from weight_tuner.notes import decision_sentence

    base, study = dashboard
    summaries = _get(f"{base}/api/studies")["study_summaries"]
    summary = [s for s in summaries if s["study_name"] == "shared"][0]
    detail = _get(f"{base}/api/studies/{summary['study_id']}")
    assert detail["name"] == "shared" and len([t for t in detail["trials"] if t["state"] == "Complete"]) == 4
    best = [t for t in detail["trials"] if t["number"] == study.best_trial.number][0]
    keys = {a["key"] for a in best["user_attrs"]}
    assert {"scheme", "val_Nomenclature_f1", "val_Description_f1", "val_Misc_f1", "val_important_f1"} <= keys
    assert "| Nomenclature |" in best["note"]["body"] and "important_f1" in best["note"]["body"]
    note = detail["note"]["body"]  # the study's note: the decision, the candidates, what to paste
    assert "## Recommendation" in note and "| thresholds |" in note and 'model_config["class_weights"] = ' in note
    assert "Test split (scored once, after the decision)" in note
    unweighted = [t for t in detail["trials"] if t["number"] == 0][0]
    assert "confirmed as candidate **unweighted**" in unweighted["note"]["body"] and "| r0f1 |" in unweighted["note"]["body"]
    rec = study.user_attrs["recommendation"]
    for row in rec["candidates"][1:]:  # each confirmed weights trial's note says what confirmation found
        if row["kind"] == "weights":
            body = [t for t in detail["trials"] if t["number"] == row["trial"]][0]["note"]["body"]
            assert f"{row['diff']['mean']:+.4f} vs no weights" in body
    # the study page's attributes: the decision first, the split as a summary (its lists are an artifact)
    attrs = detail["user_attrs"]
    assert attrs[0]["key"] == "decision" and attrs[0]["value"].startswith(decision_sentence(stored_recommendation(study)))
    split = json.loads(next(a["value"] for a in attrs if a["key"] == "split"))
    assert split["test"].endswith("chunks") and "artifact" in split["chunk_lists"]
    # issue 45, 7: the confirmation's runs show their candidate and unit as parameters (the Best Trial card showed
    # "Params = []"), and the importance card has something to rank (it raised "division by zero" with none)
    companion = [s for s in summaries if s["study_name"] == study.user_attrs["confirmation_study"]][0]
    runs = [t for t in _get(f"{base}/api/studies/{companion['study_id']}")["trials"] if t["state"] == "Complete"]
    assert runs and all({p["name"] for p in t["params"]} == {"candidate", "unit"} for t in runs)
    assert _get(f"{base}/api/studies/{companion['study_id']}/param_importances")["param_importances"]


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no Chromium here (.ci/run installs Debian's chromium)")
def test_dashboard_page_renders_in_a_real_browser(dashboard, tmp_path):
    base, study = dashboard
    summary = [s for s in _get(f"{base}/api/studies")["study_summaries"] if s["study_name"] == "shared"][0]
    url = f"{base}/dashboard/studies/{summary['study_id']}"
    value = study.best_value
    shown = str(int(value)) if value.is_integer() else repr(value)[:8]  # as JavaScript prints numbers
    expected = f"Best Trial (number={study.best_trial.number}) {shown}"
    for budget in (20000, 60000):  # a slow machine gets a second, longer look
        proc = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
                               f"--virtual-time-budget={budget}", "--dump-dom", url],
                              capture_output=True, text=True, timeout=180)
        text = " ".join(re.sub(r"<[^>]+>", " ", re.sub(r"<style.*?</style>", "", proc.stdout, flags=re.S)).split())
        if expected in text:
            break
    assert "shared" in text, proc.stderr[-1500:]
    assert expected in text
    # the decision is on this first page too, as the first of the study's user attributes (not only on Note)
    from weight_tuner.notes import decision_attr

    assert "Study User Attributes" in text and decision_attr(stored_recommendation(study))[:60] in text
    # the study's note page: the decision and the line to paste, rendered from the note's Markdown
    proc = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000",
                           "--dump-dom", f"{url}/note"], capture_output=True, text=True, timeout=180)
    text = " ".join(re.sub(r"<[^>]+>", " ", re.sub(r"<style.*?</style>", "", proc.stdout, flags=re.S)).split())
    from weight_tuner.notes import decision_sentence, paste_snippet

    rec = stored_recommendation(study)
    assert "Recommendation" in text and decision_sentence(rec).split(":")[0] in text, text[-1500:]
    # the code block is tokenised by the page's highlighter: compare without spaces
    assert paste_snippet(rec).replace(" ", "") in text.replace(" ", "")
    assert "Test split (scored once, after the decision)" in text


@pytest.mark.skipif(_chromium() is None, reason="no Chromium here (.ci/run installs Debian's chromium)")
def test_report_page_renders_in_a_real_browser(view_study, tmp_path):
    from weight_tuner.cli import main

    storage, study = view_study
    assert main(["report", "--study", "shared", "--storage", storage, "-o", str(tmp_path / "page")]) == 0
    page = tmp_path / "page" / "report.html"
    probe = tmp_path / "probe.html"  # the page plus a script that records what the browser decoded
    probe.write_text(page.read_text().replace("</body>", "<script>window.addEventListener('load', () => {"
                                              "for (const i of document.images) i.setAttribute('data-w', i.naturalWidth);"
                                              "for (const t of document.querySelectorAll('table')) {"
                                              " const box = t.parentElement;"
                                              " const cut = t.scrollWidth > box.clientWidth + 1 &&"
                                              "  getComputedStyle(box).overflowX !== 'auto';"
                                              " t.setAttribute('data-cut', cut);"
                                              " t.setAttribute('data-whole', t.scrollWidth <= box.clientWidth + 1) }"
                                              "});</script></body>"))

    def dom_at(size):
        return subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                               "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={size}",
                               "--virtual-time-budget=10000", "--allow-file-access-from-files", "--dump-dom",
                               probe.as_uri()], capture_output=True, text=True, timeout=180)

    proc = dom_at("1280,800")
    dom = proc.stdout
    rec = study.user_attrs["recommendation"]
    assert 'id="verdict"' in dom and ("Use no class weights" in dom or "Use class weights" in dom), proc.stderr[-1500:]
    widths = dict(re.findall(r'<img id="figure-([a-z_]+)"[^>]*data-w="(\d+)"', dom))
    expected = {"paired_differences", "history", "weight_map", "tradeoff", "confusion_deployed"}
    assert expected <= set(widths), widths
    assert all(int(w) > 100 for w in widths.values()), widths  # each image decoded, not a broken icon
    assert f"{rec['n_units']} units" in dom
    tables = re.findall(r'<table[^>]*data-cut="(true|false)"', dom)
    assert len(tables) >= 3 and set(tables) == {"false"}, tables  # every table whole, or scrolling in its box
    body = dom.split("<body>", 1)[1]
    assert body.index('id="verdict"') < min(body.index("<table"), body.index("<img"))  # the decision first
    # at 1920 px no table hides columns behind a scroll (the page once capped its width at 1100 px)
    wide = dom_at("1920,1080").stdout
    whole = dict(re.findall(r'<table[^>]*id="([a-z]+)"[^>]*data-whole="(true|false)"', wide))
    assert whole.get("trials") == "true" and set(whole.values()) == {"true"}, whole



PROBE = b"""(function () {
  // Where the decision bar lies once drawn, written onto it for --dump-dom to carry out.
  setInterval(function () {
    var bar = document.getElementById("wt-decision-bar");
    if (!bar || !bar.textContent) return;
    var r = bar.getBoundingClientRect();
    var top = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    var best = Array.prototype.find.call(document.querySelectorAll("h6"), function (h) {
      return h.textContent.indexOf("Best Trial") === 0; });
    bar.setAttribute("data-top", Math.round(r.top));
    bar.setAttribute("data-bottom", Math.round(r.bottom));
    bar.setAttribute("data-clipped", bar.scrollWidth > bar.clientWidth || bar.scrollHeight > bar.clientHeight);
    bar.setAttribute("data-on-top", !!(top && top.closest("#wt-decision-bar")));
    bar.setAttribute("data-best-top", best ? Math.round(best.getBoundingClientRect().top) : -1);
    // the page's first control under the bar: no empty band between them (issue 45, 6)
    var toggle = Array.prototype.find.call(document.querySelectorAll("span,p,label"), function (e) {
      return e.textContent === "Log y scale"; });
    bar.setAttribute("data-next-top", toggle ? Math.round(toggle.getBoundingClientRect().top) : -1);
  }, 250);
})();"""


@pytest.fixture(scope="module")
def probed_dashboard(view_study):
    """The dashboard's WSGI app as `weight-tuner dashboard` serves it, plus a probe script (same origin:
    the page's Content-Security-Policy refuses inline scripts)."""
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from optuna_dashboard import wsgi

    from weight_tuner.dashboard import with_decision_bar

    storage, study = view_study
    app = with_decision_bar(wsgi(storage))

    def probed(environ, start_response):
        if environ["PATH_INFO"] == "/probe.js":
            start_response("200 OK", [("Content-Type", "text/javascript")])
            return [PROBE]
        chunks = app(environ, lambda status, headers, exc=None: start_response(
            status, [(k, v) for k, v in headers if k.lower() != "content-length"]))
        return [c.replace(b"</head>", b'<script defer src="/probe.js"></script></head>') for c in chunks]

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = make_server("127.0.0.1", 0, probed, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", study
    server.shutdown()


def _dom(url, tmp_path, budget=20000, size="1400,1000"):
    proc = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={size}",
                           f"--virtual-time-budget={budget}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=180)
    return proc.stdout


@pytest.mark.skipif(_chromium() is None, reason="no Chromium here (.ci/run installs Debian's chromium)")
def test_the_decision_is_on_the_dashboards_first_screen_unclipped(probed_dashboard, tmp_path):
    from weight_tuner.notes import decision_attr

    base, study = probed_dashboard
    summaries = _get(f"{base}/api/studies")["study_summaries"]
    ids = {s["study_name"]: s["study_id"] for s in summaries}
    rec = stored_recommendation(study)
    for budget in (20000, 60000):  # a slow machine gets a second, longer look
        dom = _dom(f"{base}/dashboard/studies/{ids['shared']}", tmp_path, budget)
        bar = re.search(r'<div id="wt-decision-bar"([^>]*)>(.*?)</div></div>', dom, re.S)
        if bar and "data-best-top" in bar.group(1):
            break
    assert bar, dom[-2000:]
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', bar.group(1)))
    text = " ".join(re.sub(r"<[^>]+>", " ", bar.group(2)).split()).replace("&amp;", "&").replace("&quot;", '"')
    assert decision_attr(rec) in text  # the whole decision, as stored
    assert 64 <= int(attrs["top"]) and int(attrs["bottom"]) <= 1000  # below the app bar, on the first screen
    assert attrs["clipped"] == "false" and attrs["on-top"] == "true"  # all of it shown, nothing drawn over it
    best = study.best_trial.number
    assert int(attrs["bottom"]) <= int(attrs["best-top"])  # above the Best Trial card
    assert 0 <= int(attrs["next-top"]) - int(attrs["bottom"]) <= 48  # no empty band under the bar (it was 65 px more)
    # issue 45, 1: the bar names the recommended trial as the trial notes and the export do
    if rec.trial == best:
        assert f"Best Trial card below (trial {best}) is the recommended trial" in text
    else:
        assert (f"Best Trial card below (trial {best}) is the search's highest validation score, from one split and "
                f"one seed; it is not the recommendation (trial {rec.trial})") in text
    note_page = _dom(f"{base}/dashboard/studies/{ids['shared']}/note", tmp_path)
    assert "wt-decision-bar" in note_page and "Best Trial card below" not in note_page  # no such card there
    # the companion study says what it is and where the decision lives
    companion = study.user_attrs["confirmation_study"]
    dom = _dom(f"{base}/dashboard/studies/{ids[companion]}", tmp_path)
    assert "The confirmation of study 'shared'" in dom and "the decision is in study 'shared'" in dom


def _notebook_text(nb) -> str:
    import html

    out = []
    for cell in nb.cells:
        for o in getattr(cell, "outputs", []):
            out.append(o.get("text", ""))
            out.append(o.get("data", {}).get("text/plain", ""))
            out.append(html.unescape(o.get("data", {}).get("text/html", "")))  # as a reader sees it
    return "\n".join(out)


def test_every_view_prints_each_difference_interval_and_weight_alike(view_study, executed_notebook, tmp_path, capsys):
    """One study, every view: the same numbers in the same printed form, and no other form."""
    from optuna_dashboard._note import get_note_from_system_attrs

    from weight_tuner import formats as fmt
    from weight_tuner.cli import main
    from weight_tuner.notes import decision_attr, decision_sentence

    storage, study = view_study
    rec = stored_recommendation(study)
    assert main(["report", "--study", "shared", "--storage", storage, "-o", str(tmp_path)]) == 0
    stdout = capsys.readouterr().out
    assert main(["export", "--study", "shared", "--storage", storage, "-o", str(tmp_path / "e.json")]) == 0
    system = study._storage.get_study_system_attrs(study._study_id)
    views = {"report (terminal)": stdout, "report.html": (tmp_path / "report.html").read_text(),
             "dashboard note": get_note_from_system_attrs(system, None)["body"],
             "notebook": _notebook_text(executed_notebook)}
    for name, text in views.items():
        for r in rec.candidates:
            assert fmt.diff(r.diff.mean) in text, (name, r.candidate)
            assert fmt.interval(r.diff.ci_low, r.diff.ci_high, rec.level) in text, (name, r.candidate)
            assert fmt.weights(r.class_weights) in text or not r.class_weights, (name, r.candidate)
        for other in ("ci_low", "diff vs none", "against no weights", "differs by"):
            assert other not in text, (name, other)
        assert not re.search(r"(?<!% )interval \[", text), name  # every interval says its level
    # the sentence views: the decision itself, word for word
    export = json.loads((tmp_path / "e.json").read_text())
    assert export["decision"] == decision_sentence(rec) and list(export)[0] == "decision"
    assert decision_sentence(rec) in decision_attr(rec)
    from weight_tuner.notes import deployed_sentence

    for name in ("report (terminal)", "report.html", "dashboard note", "notebook"):
        shown = views[name].replace("&#x27;", "'")
        assert decision_sentence(rec) in shown and deployed_sentence(rec) in shown, name
    # images: every one with its alternative text, in the page and in the notebook as nbconvert writes it
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(executed_notebook)
    for page in (views["report.html"], body):
        imgs = re.findall(r"<img\b[^>]*>", page)
        assert imgs and all(re.search(r'alt="Figure\. [^"]+"', i) for i in imgs), [i[:120] for i in imgs]
    # the deployed model's test score is the export's, in the report and the notebook
    score = export["deployed_test"]["important_f1"] if export["deployed_test"] else None
    if score is not None:
        assert fmt.score(score) in views["report.html"] and fmt.score(score) in views["notebook"]
    # the trials table too (issue 45, 4: it printed 0.96, 1 and 0.931 in one column): every trial's score and
    # weights as formats.py prints them, in the terminal, the page and the notebook
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        weights = t.user_attrs.get("class_weights_trained") or t.user_attrs.get("class_weights")
        for name in ("report (terminal)", "report.html", "notebook"):
            assert fmt.score(t.user_attrs["val_important_f1"]) in views[name], (name, t.number)
            assert not weights or all(fmt.weight(weights[c]) in views[name] for c in weights), (name, t.number)
    # the deployed model's per-class F1 and confusion matrix (issue 45, 2: the matrix was the search's single
    # model's, and the deployed row had no per-class columns), in the note, the report and the notebook
    from weight_tuner.notes import deployed_test

    deployed = deployed_test(rec, study.user_attrs["test_stats"])
    s = deployed["stats"]
    assert s is not None and s["important_f1"] == deployed["important_f1"]
    for name in ("report (terminal)", "report.html", "dashboard note", "notebook"):
        row = (re.findall(r"<tr>(?:(?!</tr>).)*?deployed: .*?</tr>", views[name], re.S) if "<tr" in views[name] else
               [line for line in views[name].splitlines() if "deployed: " in line])
        assert row and fmt.score(s["Nomenclature_f1"]) in row[0] and fmt.score(s["Description_f1"]) in row[0], name
    for page in (views["report.html"], body):
        assert f"Deployed model ({deployed['kind']}), test split (rows: true class)" in page
    table = re.split(r"trials, best validation val_important_f1 first[^\n]*:\n", views["report (terminal)"])[1]
    table = table.splitlines()
    assert "val_important_f1" in table[0]  # the per-class columns are behind -v and in the page
    for row in table[1:len(study.trials) + 1]:
        if " COMPLETE " not in row:
            assert "NaN" not in row, row  # a trial without scores has blank cells
            continue
        for column in [c for c in ("val_important_f1", "val_Nomenclature_f1", "val_Description_f1") if c in table[0]]:
            end = table[0].index(column) + len(column)  # right-aligned: a cell ends where its header ends
            assert re.fullmatch(r"\d\.\d{4}", row[:end].split()[-1]), (column, row)  # never 0.96 or 1


def test_the_readme_glossary_is_the_reports():
    from weight_tuner.report import GLOSSARY_TERMS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for term, meaning in GLOSSARY_TERMS.items():
        assert f"- **{term}**: {meaning}" in readme, term


def _crowded_study(n=30):
    """An in-memory study of ``n`` trials whose weights crowd one corner and whose F1s tie in places."""
    import numpy as np
    import optuna

    rng = np.random.default_rng(0)
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("search_space", {})
    for i in range(n):
        nom, desc = float(rng.uniform(1, 1.3)), float(rng.uniform(1, 1.3))
        f1n, f1d = (1.0, 0.96) if i % 4 == 0 else (float(rng.uniform(0.7, 1)), float(rng.uniform(0.9, 0.96)))
        study.add_trial(optuna.trial.create_trial(value=(f1n + f1d) / 2, params={}, distributions={}, user_attrs={
            "class_weights_trained": {"Nomenclature": nom, "Description": desc, "Misc": 1.0},
            "val_Nomenclature_f1": f1n, "val_Description_f1": f1d, "important_f1": (f1n + f1d) / 2,
            "scheme": "search"}))
    return study


@pytest.mark.parametrize("name", ["weight_map", "tradeoff", "importances"])
def test_figure_text_is_whole_and_labels_do_not_overlap(name):
    """Issue 45, 5: the importance title was cut ("...with parame"), weight-map labels printed on top of each other."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Annotation

    from weight_tuner import figures

    study = _crowded_study()
    if name == "importances":  # PED-ANOVA needs sampled parameters
        import optuna

        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(lambda t: t.suggest_float("w_Nomenclature", 0.1, 10) + t.suggest_float("w_Description", 0.1, 9),
                       n_trials=12)
    fig = getattr(figures, name)(study)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    whole = fig.bbox
    ax = fig.axes[0]
    texts = [t for t in [ax.title, ax.xaxis.label, ax.yaxis.label, *fig.texts, *fig.findobj(Annotation)]
             if t.get_visible() and t.get_text().strip()]
    for t in texts:
        box = t.get_window_extent(renderer)
        assert whole.x0 - 1 <= box.x0 and box.x1 <= whole.x1 + 1 and box.y1 <= whole.y1 + 1, t.get_text()
    labels = [t.get_window_extent(renderer) for t in fig.findobj(Annotation) if t.get_text().startswith("#")]
    assert name == "importances" or labels
    for i, a in enumerate(labels):
        assert not any(a.overlaps(b) for b in labels[i + 1:]), "labels overlap"
