// Live run page: draws the stored history, then appends points pushed over the run's websocket
// (static/js/live.js, shared with the generation page).
(function () {
  const data = JSON.parse(document.getElementById("chart-data").textContent);
  const series = data.c_index;
  const loss = data.loss;
  const xaxis = {title: {text: "Round"}, dtick: 1, range: [0.5, data.rounds + 0.5]};
  const waiting = [{text: "No round finished yet: points appear here as the hospitals report.",
                    showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: {color: "#4a5560"}}];
  const layoutC = {margin: {t: 10, r: 10}, xaxis: xaxis, yaxis: {title: {text: "C-index (Harrell)"}, range: [0.4, 1]},
                   legend: {orientation: "h"}};
  const layoutL = {margin: {t: 10, r: 10}, xaxis: xaxis, yaxis: {title: {text: "Loss (per patient)"}}};

  function tracesC() {
    return Object.keys(series).sort((a, b) => (a === "global") - (b === "global") || a.localeCompare(b)).map(n => ({
      x: series[n].x.slice(), y: series[n].y.slice(), name: n === "global" ? "Global (patient-weighted)" : n, mode: "lines+markers",
      line: n === "global" ? {width: 4, color: "#8a1538"} : {width: 2}}));
  }
  function draw() {
    // Fresh layout objects each time: Plotly.react diffs against the previous ones.
    const lc = Object.assign({}, layoutC, {annotations: Object.keys(series).length ? [] : waiting});
    const ll = Object.assign({}, layoutL, {annotations: loss.x.length ? [] : waiting});
    Plotly.react("chart-cindex", tracesC(), lc, {responsive: true, displaylogo: false});
    Plotly.react("chart-loss", [{x: loss.x.slice(), y: loss.y.slice(), name: "loss", mode: "lines+markers"}], ll,
                 {responsive: true, displaylogo: false});
  }
  draw();
  FedHaemLive.connect(data, function (round) {
    const r = round.round;
    round.metrics.forEach(m => {
      if (m.name === "c_index") {
        const s = series[m.node] || (series[m.node] = {x: [], y: []});
        if (!s.x.includes(r)) { s.x.push(r); s.y.push(m.value); FedHaemLive.countPoint(); }
      } else if ((m.name === "loss" || m.name === "train_loss") && m.node === "global" && !loss.x.includes(r)) {
        loss.x.push(r); loss.y.push(m.value);
      }
    });
    draw();
  }, null, "Cancel this run? The federation stops and the run cannot be resumed.");
})();
