// Experiment grid section of the comparison page: three charts of the latest finished grid (bars
// per setting with intervals, C per round federated vs isolated, Kaplan-Meier panels), and the
// status and last progress line of queued / running grids, pushed over a websocket per grid with
// a slow poll of the API behind it.
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
  let reloading = false;
  // Updates the row of grid `id`; returns true when the grid has ended (the page then reloads
  // to show the results).
  function show(id, status, line) {
    const badge = document.querySelector('[data-grid-status="' + id + '"]');
    if (badge && status) {
      badge.className = "badge status-" + status;
      badge.textContent = status.charAt(0).toUpperCase() + status.slice(1);
    }
    const prog = document.querySelector('[data-grid-progress="' + id + '"]');
    if (prog && line) prog.textContent = line;
    if (!finals.includes(status)) return false;
    pending.delete(id);
    if (!reloading) { reloading = true; setTimeout(() => location.reload(), 1000); }
    return true;
  }
  // Pushed: each running grid's websocket (ws/grid-runs/<id>/) sends "status" and "progress".
  // window.fedhaemGridLive counts the open sockets (the browser test reads it).
  window.fedhaemGridLive = 0;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  active.forEach(function (id) {
    const ws = new WebSocket(proto + "://" + location.host + "/ws/grid-runs/" + id + "/");
    ws.onopen = function () { window.fedhaemGridLive++; };
    ws.onclose = function () { window.fedhaemGridLive = Math.max(0, window.fedhaemGridLive - 1); };
    ws.onmessage = function (ev) {
      const msg = JSON.parse(ev.data);
      show(id, msg.data.status, msg.event === "progress" ? msg.data.line : (msg.data.error || ""));
    };
  });
  // Polled as well, slowly: a grid that ended before its socket opened, or a proxy without
  // websockets, still reaches its final state.
  function poll() {
    Promise.all([...pending].map(id => fetch("/api/grid-runs/" + id + "/", {credentials: "same-origin",
                                                                          headers: {Accept: "application/json"}})
      .then(resp => resp.ok ? resp.json() : null).then(function (g) {
        if (!g) return false;
        const lines = (g.progress || "").trim().split("\n");
        return show(id, g.status, lines[lines.length - 1]);
      }).catch(() => false)))
      .then(function () { if (pending.size && !reloading) setTimeout(poll, window.fedhaemGridLive ? 15000 : 5000); });
  }
  setTimeout(poll, 3000);
})();
