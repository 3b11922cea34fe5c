// Comparison chart: one bar group per hospital (and all hospitals), one bar per setting.
(function () {
  const data = JSON.parse(document.getElementById("compare-data").textContent);
  const traces = data.series.map(s => ({type: "bar", name: s.name, x: data.labels, y: s.values,
    hovertemplate: "%{x}: %{y:.3f}<extra>" + s.name + "</extra>"}));
  Plotly.newPlot("chart-compare", traces, {
    margin: {t: 10, r: 10, b: 60}, barmode: "group",
    yaxis: {title: {text: "C-index (Harrell, held-out)"}, range: [0.4, 1]}, legend: {orientation: "h"},
  }, {responsive: true, displaylogo: false});
})();

// Kaplan-Meier curves by risk group: one chart per grouping (model, each conventional score).
(function () {
  const el = document.getElementById("curves-data");
  if (!el) return;
  const data = JSON.parse(el.textContent);
  data.panels.forEach(function (p, i) {
    const traces = p.groups.map(g => ({x: data.times, y: g.survival, mode: "lines", line: {shape: "hv"},
      name: g.category + " (n=" + g.n + ")", hovertemplate: "%{x} months: %{y:.2f}<extra>" + g.category + "</extra>"}));
    Plotly.newPlot("km-" + (i + 1), traces, {
      title: {text: p.title, font: {size: 14}}, margin: {t: 40, r: 10, b: 50, l: 60},
      xaxis: {title: {text: "months of follow-up"}}, yaxis: {title: {text: "survival probability"}, range: [0, 1.02]},
      legend: {orientation: "h", y: -0.3},
    }, {responsive: true, displaylogo: false});
  });
})();
