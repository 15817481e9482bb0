// weight-tuner: the study's decision in one bar above optuna-dashboard's study page (see dashboard.py).
(function () {
  "use strict";
  let shownFor = null;

  function attrsOf(detail) {
    const out = {};
    for (const a of detail.user_attrs || []) {
      let v = a.value;
      try { v = JSON.parse(v); } catch (e) { /* a plain string */ }
      out[a.key] = v;
    }
    return out;
  }

  function lines(detail) {
    const attrs = attrsOf(detail);
    if (attrs.about) return [attrs.about];
    if (!attrs.decision) return [];
    const out = ["Decision: " + attrs.decision];
    const rec = attrs.recommendation;
    const best = (detail.best_trials || [])[0];
    if (rec && best) {
      out.push(rec.decision === "weights" && rec.trial === best.number
        ? "The Best Trial card below (trial " + best.number + ") is the recommended trial."
        : "The Best Trial card below (trial " + best.number + ") is the search's highest validation score, " +
          "from one split and one seed; it is not the recommendation, which rests on the paired confirmation.");
    }
    return out;
  }

  function bar() {
    let el = document.getElementById("wt-decision-bar");
    if (!el) {
      el = document.createElement("div");
      el.id = "wt-decision-bar";
      el.setAttribute("role", "status");
      // Below the dashboard's fixed app bar (64 px); the page's own 64 px spacer then overlaps this bar
      // instead of leaving a gap under it.
      el.style.cssText = "position:relative;margin:64px 0 0 0;padding:10px 16px 10px 76px;" +
        "background:#fff8e1;border-bottom:2px solid #f9a825;font:15px/1.45 Roboto,Helvetica,Arial,sans-serif;" +
        "color:#222;white-space:normal;overflow-wrap:anywhere";
      document.body.insertBefore(el, document.body.firstChild);
      const root = document.getElementById("root");
      if (root) root.style.marginTop = "-64px";
    }
    return el;
  }

  async function update() {
    const m = location.pathname.match(/\/dashboard\/studies\/(\d+)/);
    const key = m ? m[1] : null;
    if (key === shownFor) return;
    shownFor = key;
    if (!key) { const el = document.getElementById("wt-decision-bar"); if (el) el.remove(); return; }
    try {
      const r = await fetch("/api/studies/" + key + "?after=0");
      const text = lines(await r.json());
      const el = bar();
      el.replaceChildren(...text.map((t, i) => {
        const p = document.createElement("div");
        p.textContent = t;
        if (i === 0) p.style.fontWeight = "600";
        return p;
      }));
      el.hidden = text.length === 0;
    } catch (e) {
      shownFor = null;  // try again on the next tick
    }
  }

  update();
  setInterval(update, 1000);  // the dashboard changes pages without reloading
  setInterval(() => { shownFor = null; }, 30000);  // and a running study's decision changes
})();
