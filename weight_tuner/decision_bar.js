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

  // The sentence on the Best Trial card agrees with the trial notes and the export: the recommended trial is
  // rec.trial (the unweighted one for no weights and thresholds). Only the study's first page has the card.
  // (optuna-dashboard cuts attributes at 1,024 characters: the trial is read from its own short attribute.)
  function bestTrialLine(decision, trial, best) {
    const card = "The Best Trial card below (trial " + best.number + ") ";
    if (trial !== best.number) {
      return card + "is the search's highest validation score, from one split and one seed; it is not the " +
        "recommendation (" + (trial === null ? "no trial" : "trial " + trial) + "), which rests on the paired " +
        "confirmation.";
    }
    if (decision === "thresholds") return card + "is the recommended trial, used with post-hoc per-class thresholds.";
    return card + "is the recommended trial" + (decision === "weights" ? "." : ": no weights.");
  }

  // The decision attr begins with the decision in words (studies decided before, with its kind and a colon).
  function kindOf(text) {
    if (text.startsWith("Use class weights")) return "weights";
    if (text.startsWith("Use no class weights, with post-hoc")) return "thresholds";
    if (text.startsWith("Use no class weights")) return "no_weights";
    return text.split(":")[0];
  }

  function lines(detail, firstPage) {
    const attrs = attrsOf(detail);
    if (attrs.about) return [attrs.about];
    if (!attrs.decision) return [];
    const out = ["Decision: " + attrs.decision];
    const best = (detail.best_trials || [])[0];
    const decision = kindOf(String(attrs.decision));
    if (["weights", "thresholds", "no_weights"].includes(decision) && "recommended_trial" in attrs && best &&
        firstPage) {
      out.push(bestTrialLine(decision, attrs.recommended_trial, best));
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
      const root = document.getElementById("dashboard") || document.getElementById("root");
      if (root) root.style.marginTop = "-64px";
    }
    return el;
  }

  async function update() {
    const m = location.pathname.match(/\/dashboard\/studies\/(\d+)(\/?[^/]*)/);
    const key = m ? location.pathname : null;  // per page: the Note and Trials pages have no Best Trial card
    if (key === shownFor) return;
    shownFor = key;
    if (!key) { const el = document.getElementById("wt-decision-bar"); if (el) el.remove(); return; }
    try {
      const r = await fetch("/api/studies/" + m[1] + "?after=0");
      const text = lines(await r.json(), m[2] === "" || m[2] === "/");
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
