// Live generation page: CSF / GSF / NNDR p5 per round, the federated generator (thick) and each
// hospital's generator alone (thin, dashed); stored history first, then points pushed over the
// run's websocket (the same ws/runs/<id>/ channel and messages as the survival run page).
(function () {
  const data = JSON.parse(document.getElementById("chart-data").textContent);
  const xaxis = {title: {text: "Round"}, dtick: 1, range: [0.5, data.rounds + 0.5]};
  const waiting = [{text: "No round validated yet: points appear here as the hospitals report.",
                    showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: {color: "#4a5560"}}];

  function traces(score) {
    const s = data.scores[score];
    return Object.keys(s).sort((a, b) => (a !== "federated") - (b !== "federated") || a.localeCompare(b)).map(k => ({
      x: s[k].x.slice(), y: s[k].y.slice(), mode: "lines+markers",
      name: k === "federated" ? "Federated (pooled)" : k.slice(6) + " alone",
      line: k === "federated" ? {width: 4, color: "#8a1538"} : {width: 2, dash: "dot"}}));
  }
  function draw() {
    Object.keys(data.scores).forEach(score => {
      const t = traces(score);
      const layout = {margin: {t: 10, r: 10}, xaxis: xaxis, legend: {orientation: "h"},
                      yaxis: {title: {text: data.labels[score]}, range: score === "nndr_p5" ? [0, 1.05] : [0, 1]},
                      annotations: t.length ? [] : waiting};
      Plotly.react("chart-" + score, t, layout, {responsive: true, displaylogo: false});
    });
  }
  function add(score, line, r, v) {
    const s = data.scores[score][line] || (data.scores[score][line] = {x: [], y: []});
    if (s.x.includes(r)) return;
    s.x.push(r); s.y.push(v); window.fedhaemPoints++;
    const el = document.getElementById("live-points"); if (el) el.textContent = window.fedhaemPoints;
  }
  function setProgress(done) {
    data.done = Math.max(data.done, done);
    document.getElementById("progress").value = data.done;
    document.getElementById("progress-label").textContent = data.done + " of " + data.rounds;
  }
  function setStatus(status, error) {
    const el = document.getElementById("run-status");
    el.dataset.status = status;
    el.textContent = status.charAt(0).toUpperCase() + status.slice(1);
    if (error) { const e = document.getElementById("run-error"); e.textContent = error; e.hidden = false; }
    if (["finished", "failed", "cancelled"].includes(status)) {
      const f = document.getElementById("cancel-form"); if (f) f.remove();
      if (status === "finished" && !document.getElementById("cohort-link")) setTimeout(() => location.reload(), 1500);
    }
  }
  draw();
  window.fedhaemPoints = 0;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(proto + "://" + location.host + "/ws/runs/" + data.run + "/");
  window.fedhaemLive = false;
  ws.onopen = function () { window.fedhaemLive = true; };
  ws.onclose = function () { window.fedhaemLive = false; };
  ws.onmessage = function (ev) {
    const msg = JSON.parse(ev.data);
    if (msg.event === "round") {
      const r = msg.data.round;
      msg.data.metrics.forEach(m => {
        if (m.node === "global" && m.name in data.scores) add(m.name, "federated", r, m.value);
        else if (m.name.startsWith("alone_") && m.name.slice(6) in data.scores) add(m.name.slice(6), "alone:" + m.node, r, m.value);
      });
      setProgress(r);
      draw();
    } else if (msg.event === "status") {
      setStatus(msg.data.status, msg.data.error);
    }
  };
  window.fedhaemCancel = function (ev) {
    ev.preventDefault();
    if (!confirm("Cancel this generation run? The federation stops and the run cannot be resumed.")) return false;
    const token = document.querySelector("#cancel-form [name=csrfmiddlewaretoken]").value;
    fetch(ev.target.action, {method: "POST", headers: {"X-CSRFToken": token}, credentials: "same-origin"})
      .then(r => r.json()).then(j => setStatus(j.status || "cancelled", j.error || j.detail))
      .catch(() => { ev.target.action = ev.target.dataset.fallback; ev.target.submit(); });
    return false;
  };
})();
