// Experiment grid section of the comparison page: three charts of the latest finished grid (bars
// per setting with intervals, C per round federated vs isolated, Kaplan-Meier panels) and a small
// poll of the API that keeps the status of queued / running grids current.
(function () {
  const config = {responsive: true, displaylogo: false};
  const el = document.getElementById("grid-chart-data");
  if (el && window.Plotly) {
    const data = JSON.parse(el.textContent);
    const bars = data.bars.series.map(s => ({
      type: "bar", name: s.name, x: data.bars.labels, y: s.y,
      error_y: {type: "data", symmetric: false, visible: true,
                array: s.y.map((v, i) => (v === null || s.hi[i] === null) ? 0 : s.hi[i] - v),
                arrayminus: s.y.map((v, i) => (v === null || s.lo[i] === null) ? 0 : v - s.lo[i])},
      hovertemplate: "%{x}: %{y:.3f}<extra>" + s.name + "</extra>"}));
    Plotly.newPlot("grid-chart-bars", bars, {
      title: {text: "Global test set: Harrell C (mean over seeds, mean 95 % interval)", font: {size: 14}},
      margin: {t: 40, r: 10, b: 80, l: 60}, barmode: "group",
      yaxis: {title: {text: "Harrell C"}, range: [0.4, 1]}, xaxis: {automargin: true},
      legend: {orientation: "h", y: 1.1}}, config);

    const r = data.rounds;
    const lines = r.series.map(s => ({
      x: s.x, y: s.y, mode: "lines+markers",
      name: (s.node === "global" ? "all nodes" : s.node) + " " + s.kind,
      line: s.kind === "federated" ? {width: s.node === "global" ? 4 : 2} : {width: 2, dash: "dot"},
      hovertemplate: "round %{x}: %{y:.3f}<extra>%{fullData.name}</extra>"}));
    Plotly.newPlot("grid-chart-rounds", lines, {
      title: {text: r.k ? "Harrell C per round on each node's hold-out (" + r.k + " nodes, " + r.case + " case)"
                        : "No federated rounds recorded", font: {size: 14}},
      margin: {t: 40, r: 10, b: 50, l: 60}, xaxis: {title: {text: "round (epoch for a node alone)"}, dtick: 1},
      yaxis: {title: {text: "Harrell C (hold-out, mean over seeds)"}}, legend: {orientation: "h", y: -0.25}}, config);

    (data.km.panels || []).forEach(function (p, i) {
      const traces = p.groups.map(g => ({
        x: g.times, y: g.survival, mode: "lines", line: {shape: "hv"}, name: g.label + " (n=" + g.n + ")",
        hovertemplate: "%{x:.1f} months: %{y:.2f}<extra>" + g.label + "</extra>"}));
      Plotly.newPlot("grid-km-" + (i + 1), traces, {
        title: {text: p.title, font: {size: 14}}, margin: {t: 40, r: 10, b: 50, l: 60},
        xaxis: {title: {text: "months"}}, yaxis: {title: {text: "survival probability"}, range: [0, 1.02]},
        legend: {orientation: "h", y: -0.3}}, config);
    });
  }

  const active = JSON.parse((document.getElementById("grid-active") || {}).textContent || "[]");
  if (!active.length) return;
  const finals = ["finished", "failed", "cancelled"];
  const pending = new Set(active);
  function poll() {
    Promise.all([...pending].map(id => fetch("/api/grid-runs/" + id + "/", {credentials: "same-origin",
                                                                          headers: {Accept: "application/json"}})
      .then(resp => resp.ok ? resp.json() : null).then(function (g) {
        if (!g) return false;
        const badge = document.querySelector('[data-grid-status="' + id + '"]');
        if (badge) {
          badge.className = "badge status-" + g.status;
          badge.textContent = g.status.charAt(0).toUpperCase() + g.status.slice(1);
        }
        const lines = (g.progress || "").trim().split("\n");
        const prog = document.querySelector('[data-grid-progress="' + id + '"]');
        if (prog && lines[lines.length - 1]) prog.textContent = lines[lines.length - 1];
        if (finals.includes(g.status)) { pending.delete(id); return true; }
        return false;
      }).catch(() => false)))
      .then(function (ended) {
        if (ended.some(Boolean)) { setTimeout(() => location.reload(), 1000); return; }
        if (pending.size) setTimeout(poll, 5000);
      });
  }
  setTimeout(poll, 3000);
})();
