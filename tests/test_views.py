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

from weight_tuner.study.recommend import confirm, final_test_evaluation
from weight_tuner.study import StudyConfig, tune

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "analyze_study.ipynb"


@pytest.fixture(scope="module")
def view_study(prepared, tmp_path_factory):
    d = tmp_path_factory.mktemp("views")
    storage = f"sqlite:///{d}/v.db"
    cfg = StudyConfig(model={"hidden_size": 6, "num_layers": 1, "epochs": 2, "batch_size": 16, "verbosity": 0,
                             "learning_rate": 0.01}, schemes=["unweighted", "inverse_frequency", "balanced"])
    study = tune(prepared, storage, "views", 3, cfg)
    confirm(study, prepared, {"folds": 2, "repeats": 1, "top": 1})
    final_test_evaluation(study, prepared, storage)
    return storage, study


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
    nb.cells[1].source = f"STORAGE = {storage!r}\nSTUDY = 'views'"
    path = tmp_path_factory.mktemp("notebook")
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path)}}).execute()
    return nb


def test_notebook_runs_headless_against_a_tiny_study(executed_notebook):
    nb = executed_notebook
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)
    text = "\n".join(json.dumps(o) for c in code for o in c.outputs)
    assert "unweighted" in text and "Use " in text and "ci_low" in text  # the recommendation section
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
    exe = shutil.which("optuna-dashboard") or str(Path(sys.executable).parent / "optuna-dashboard")
    port = _free_port()
    proc = subprocess.Popen([exe, storage, "--host", "127.0.0.1", "--port", str(port)],
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
    base, study = dashboard
    summaries = _get(f"{base}/api/studies")["study_summaries"]
    summary = [s for s in summaries if s["study_name"] == "views"][0]
    detail = _get(f"{base}/api/studies/{summary['study_id']}")
    assert detail["name"] == "views" and len([t for t in detail["trials"] if t["state"] == "Complete"]) == 3
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
            assert f"{row['diff']['mean']:+.4f} against no weights" in body
    # the study page's attributes: the decision first, the split as a summary (its lists are an artifact)
    attrs = detail["user_attrs"]
    assert attrs[0]["key"] == "decision" and rec["decision"] in attrs[0]["value"]
    split = json.loads(next(a["value"] for a in attrs if a["key"] == "split"))
    assert split["test"].endswith("chunks") and "artifact" in split["chunk_lists"]


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no Chromium here (.ci/run installs Debian's chromium)")
def test_dashboard_page_renders_in_a_real_browser(dashboard, tmp_path):
    base, study = dashboard
    summary = [s for s in _get(f"{base}/api/studies")["study_summaries"] if s["study_name"] == "views"][0]
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
    assert "views" in text, proc.stderr[-1500:]
    assert expected in text
    # the decision is on this first page too, as the first of the study's user attributes (not only on Note)
    from weight_tuner.study.notes import decision_attr

    assert "Study User Attributes" in text and decision_attr(study.user_attrs["recommendation"])[:60] in text
    # the study's note page: the decision and the line to paste, rendered from the note's Markdown
    proc = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000",
                           "--dump-dom", f"{url}/note"], capture_output=True, text=True, timeout=180)
    text = " ".join(re.sub(r"<[^>]+>", " ", re.sub(r"<style.*?</style>", "", proc.stdout, flags=re.S)).split())
    from weight_tuner.study.notes import decision_sentence, paste_snippet

    rec = study.user_attrs["recommendation"]
    assert "Recommendation" in text and decision_sentence(rec).split(":")[0] in text, text[-1500:]
    # the code block is tokenised by the page's highlighter: compare without spaces
    assert paste_snippet(rec).replace(" ", "") in text.replace(" ", "")
    assert "Test split (scored once, after the decision)" in text


@pytest.mark.skipif(_chromium() is None, reason="no Chromium here (.ci/run installs Debian's chromium)")
def test_report_page_renders_in_a_real_browser(view_study, tmp_path):
    from weight_tuner.cli import main

    storage, study = view_study
    assert main(["report", "--study", "views", "--storage", storage, "-o", str(tmp_path / "page")]) == 0
    page = tmp_path / "page" / "report.html"
    probe = tmp_path / "probe.html"  # the page plus a script that records what the browser decoded
    probe.write_text(page.read_text().replace("</body>", "<script>window.addEventListener('load', () => {"
                                              "for (const i of document.images) i.setAttribute('data-w', i.naturalWidth)"
                                              "});</script></body>"))
    proc = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
                           "--allow-file-access-from-files", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=180)
    dom = proc.stdout
    rec = study.user_attrs["recommendation"]
    assert 'id="verdict"' in dom and ("Use no class weights" in dom or "Use class weights" in dom), proc.stderr[-1500:]
    widths = dict(re.findall(r'<img id="figure-([a-z_]+)"[^>]*data-w="(\d+)"', dom))
    expected = {"paired_differences", "history", "weight_map", "tradeoff", "confusion_recommended"}
    assert expected <= set(widths), widths
    assert all(int(w) > 100 for w in widths.values()), widths  # each image decoded, not a broken icon
    assert f"{rec['n_units']} units" in dom

