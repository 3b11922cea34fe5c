// Comparison chart: one bar group per setting, one bar per finished run (missing values skipped).
(function () {
  const data = JSON.parse(document.getElementById("compare-data").textContent);
  const traces = data.runs.map(r => ({type: "bar", name: r.name, x: data.labels, y: r.values}));
  Plotly.newPlot("chart-compare", traces, {
    margin: {t: 10, r: 10, b: 60}, barmode: "group",
    yaxis: {title: "C-index (Harrell, held-out)", range: [0.4, 1]}, legend: {orientation: "h"},
  }, {responsive: true, displaylogo: false});
})();
