// Plots of a federated analysis report (the analysis run page and the study report): Kaplan-Meier
// curves with their confidence bands (step functions on the study's time grid), the forest plot
// of the Cox hazard ratios, histograms drawn from the pooled binned counts and category bars.
// The data come from a json_script element (the Content-Security-Policy allows no inline script).
window.FedHaemAnalysisPlots = (function () {
  const COLOURS = ["#8a1538", "#1f5f8b", "#3a7d44", "#b8860b", "#6a3d9a", "#c05800", "#2b8c8c", "#555555"];
  function rgba(hex, a) {
    const n = parseInt(hex.slice(1), 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + a + ")";
  }
  function km(data, id, config) {
    const el = document.getElementById(id);
    if (!el) return;
    const traces = [];
    Object.keys(data.km).forEach(function (g, i) {
      const k = data.km[g], c = COLOURS[i % COLOURS.length];
      traces.push({x: k.time, y: k.upper, mode: "lines", line: {shape: "hv", width: 0}, hoverinfo: "skip",
                   showlegend: false, legendgroup: g, connectgaps: false});
      traces.push({x: k.time, y: k.lower, mode: "lines", line: {shape: "hv", width: 0}, fill: "tonexty",
                   fillcolor: rgba(c, 0.18), hoverinfo: "skip", showlegend: false, legendgroup: g,
                   name: g + " 95% band", connectgaps: false});
      traces.push({x: k.time, y: k.survival, mode: "lines", name: g, legendgroup: g,
                   line: {shape: "hv", width: 3, color: c}, connectgaps: false,
                   hovertemplate: g + ": S(%{x}) = %{y:.3f}<extra></extra>"});
    });
    Plotly.newPlot(el, traces, {margin: {t: 10, r: 10}, legend: {orientation: "h"},
      xaxis: {title: {text: "Time (" + data.time_unit + ")"}, rangemode: "tozero"},
      yaxis: {title: {text: "Survival probability"}, range: [0, 1.02]}}, config);
  }
  function forest(data, id, config) {
    const el = document.getElementById(id);
    if (!el || !data.cox) return;
    const c = data.cox, n = c.covariates.length;
    const y = c.covariates.slice().reverse();
    const hr = c.hr.slice().reverse(), lo = c.hr_lower.slice().reverse(), hi = c.hr_upper.slice().reverse();
    const trace = {x: hr, y: y, mode: "markers", type: "scatter", marker: {size: 10, color: "#8a1538", symbol: "square"},
      error_x: {type: "data", symmetric: false, array: hr.map((v, i) => (hi[i] == null || v == null) ? 0 : hi[i] - v),
                arrayminus: hr.map((v, i) => (lo[i] == null || v == null) ? 0 : v - lo[i]), thickness: 2, width: 4},
      hovertemplate: "%{y}: HR %{x:.3f}<extra></extra>", name: "Hazard ratio (95% CI)"};
    Plotly.newPlot(el, [trace], {margin: {t: 10, r: 10, l: 140}, height: Math.max(220, 60 + 36 * n),
      xaxis: {type: "log", title: {text: "Hazard ratio (log scale), 95% CI"}},
      yaxis: {automargin: true},
      shapes: [{type: "line", x0: 1, x1: 1, xref: "x", y0: 0, y1: 1, yref: "paper", line: {dash: "dash", color: "#4a5560"}}]},
      config);
  }
  function smallChart(container, key, title, traces, layout, config) {
    const fig = document.createElement("figure");
    fig.className = "card";
    const div = document.createElement("div");
    div.className = "chart small"; div.id = container.id + "-" + key.replace(/[^A-Za-z0-9_-]/g, "_");
    div.setAttribute("role", "img"); div.setAttribute("aria-label", title);
    const cap = document.createElement("figcaption"); cap.textContent = title;
    fig.appendChild(div); fig.appendChild(cap); container.appendChild(fig);
    Plotly.newPlot(div, traces, Object.assign({margin: {t: 10, r: 10}, height: 260}, layout), config);
  }
  function histograms(data, id, config) {
    const box = document.getElementById(id);
    if (!box) return;
    Object.keys(data.histograms).forEach(function (col) {
      const h = data.histograms[col], x = [], w = [], y = [];
      for (let i = 0; i < h.counts.length; i++) {
        x.push((h.edges[i] + h.edges[i + 1]) / 2); w.push(h.edges[i + 1] - h.edges[i]); y.push(h.counts[i]);
      }
      const partial = h.partial || [];
      smallChart(box, "hist-" + col, col + " (pooled" + (partial.some(Boolean) ? "; lighter bars hold a suppressed small cell: at least this many" : "") + ")",
        [{type: "bar", x: x, y: y, width: w, name: col,
          marker: {color: y.map((v, i) => partial[i] ? "#8fb3cc" : "#1f5f8b"), line: {color: "#ffffff", width: 1}}}],
        {bargap: 0, xaxis: {title: {text: col}}, yaxis: {title: {text: "Patients"}}}, config);
    });
    Object.keys(data.categories).forEach(function (col) {
      const counts = data.categories[col], cats = Object.keys(counts);
      smallChart(box, "cat-" + col, col + " (pooled; missing bars: suppressed)",
        [{type: "bar", x: cats, y: cats.map(k => counts[k]), marker: {color: "#3a7d44"}, name: col}],
        {xaxis: {type: "category", title: {text: col}}, yaxis: {title: {text: "Patients"}}}, config);
    });
  }
  function draw(data, prefix, config) {
    config = Object.assign({responsive: true, displaylogo: false}, config || {});
    km(data, prefix + "chart-km", config);
    forest(data, prefix + "chart-forest", config);
    histograms(data, prefix + "histograms", config);
    window.fedhaemAnalysisDrawn = true;
  }
  // The study report's section draws itself (static figures: the page may be printed or saved).
  const report = document.getElementById("report-analysis-plots");
  if (report) draw(JSON.parse(report.textContent), "report-", {staticPlot: true});
  return {draw: draw};
})();
