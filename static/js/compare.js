// Comparison chart: one bar group per hospital (and all hospitals), one bar per setting.
(function () {
  const data = JSON.parse(document.getElementById("compare-data").textContent);
  const traces = data.series.map(s => ({type: "bar", name: s.name, x: data.labels, y: s.values,
    hovertemplate: "%{x}: %{y:.3f}<extra>" + s.name + "</extra>"}));
  Plotly.newPlot("chart-compare", traces, {
    margin: {t: 10, r: 10, b: 60}, barmode: "group",
    yaxis: {title: "C-index (Harrell, held-out)", range: [0.4, 1]}, legend: {orientation: "h"},
  }, {responsive: true, displaylogo: false});
})();
