// Cohort page: plots of the SAFE validation report (Kaplan-Meier real vs synthetic, per-column
// fidelity); the numbers are in the table below the plots.
(function () {
  const el = document.getElementById("report-plots");
  if (!el || typeof Plotly === "undefined") return;
  const p = JSON.parse(el.textContent);
  const cfg = {responsive: true, displaylogo: false};
  if (p.km && document.getElementById("chart-km")) {
    Plotly.react("chart-km", [
      {x: p.km.t, y: p.km.real, name: "Real patients (pooled over hospitals)", mode: "lines", line: {shape: "hv", width: 3}},
      {x: p.km.t, y: p.km.synthetic, name: "Synthetic cohort", mode: "lines", line: {shape: "hv", dash: "dot", width: 3}}],
      {margin: {t: 10, r: 10}, xaxis: {title: {text: "Months"}}, yaxis: {title: {text: "Survival probability"}, range: [0, 1]},
       legend: {orientation: "h"}}, cfg);
  }
  if (p.columns && document.getElementById("chart-columns")) {
    Plotly.react("chart-columns", [{x: p.columns.names, y: p.columns.scores, type: "bar", name: "1 - distance"}],
      {margin: {t: 10, r: 10, b: 110}, yaxis: {title: {text: "1 - KS (numeric) / 1 - TV (categories)"}, range: [0, 1]}}, cfg);
  }
})();
