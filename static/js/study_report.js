(function () {
  // From static/js, not inline: the portal's Content-Security-Policy allows no inline script.
  document.querySelectorAll("[data-print]").forEach(function (b) {
    b.addEventListener("click", function () { window.print(); });
  });
  JSON.parse(document.getElementById("report-charts").textContent).forEach(function (c) {
    var traces = Object.keys(c.c_index).map(function (n) {
      return {x: c.c_index[n].x, y: c.c_index[n].y, mode: "lines+markers", name: n === "global" ? "Global" : n,
              line: n === "global" ? {width: 4, color: "#8a1538"} : {width: 2}};
    });
    Plotly.newPlot("fig-" + c.run, traces, {margin: {t: 10}, xaxis: {title: {text: "Round"}, dtick: 1},
      yaxis: {title: {text: "C-index"}, range: [0.4, 1]}, legend: {orientation: "h"}}, {staticPlot: true});
  });
})();
