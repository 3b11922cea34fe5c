// Live generation page: CSF / GSF / NNDR p5 per round, the federated generator (thick) and each
// hospital's generator alone (thin, dashed); stored history first, then points pushed over the
// run's websocket (static/js/live.js, shared with the survival run page).
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
    s.x.push(r); s.y.push(v); FedHaemLive.countPoint();
  }
  draw();
  FedHaemLive.connect(data, function (round) {
    round.metrics.forEach(m => {
      if (m.node === "global" && m.name in data.scores) add(m.name, "federated", round.round, m.value);
      else if (m.name.startsWith("alone_") && m.name.slice(6) in data.scores) add(m.name.slice(6), "alone:" + m.node, round.round, m.value);
    });
    draw();
  }, function (status) {
    if (status === "finished" && !document.getElementById("cohort-link")) setTimeout(() => location.reload(), 1500);
  }, "Cancel this generation run? The federation stops and the run cannot be resumed.");
})();
