// Live analysis page: the phases (describe, km, cox with its Newton step) as the hospitals
// report them over the run's websocket (static/js/live.js: status, cancel), then the report's
// plots (static/js/analysis_plots.js); the page reloads once to show a report that just arrived.
(function () {
  const data = JSON.parse(document.getElementById("chart-data").textContent);
  const order = data.phases.map(p => p.name);
  function mark(name, step) {
    const i = order.indexOf(name);
    if (i < 0) return;
    order.forEach(function (n, j) {
      const li = document.getElementById("phase-" + n), span = li.querySelector(".phase-state");
      if (j < i && li.dataset.state !== "done") { li.dataset.state = "done"; span.textContent = "done"; }
      if (j === i) {
        li.dataset.state = "running";
        span.textContent = "running" + (step ? " (step " + step + ")" : "");
      }
    });
    FedHaemLive.countPoint();
  }
  function phaseOf(text) { return String(text || "").split(/[: ]/)[0]; }
  const plots = document.getElementById("analysis-plots");
  if (plots) FedHaemAnalysisPlots.draw(JSON.parse(plots.textContent), "");
  const ws = FedHaemLive.connect(data, function () {}, function (status) {
    if (status === "finished") {
      order.forEach(function (n) {
        const li = document.getElementById("phase-" + n);
        li.dataset.state = "done"; li.querySelector(".phase-state").textContent = "done";
      });
      if (!document.getElementById("analysis-report")) setTimeout(() => location.reload(), 1000);
    }
  }, "Cancel this analysis run? The federation stops and the run cannot be resumed.");
  const forward = ws.onmessage;
  ws.onmessage = function (ev) {
    forward(ev);
    const msg = JSON.parse(ev.data);
    if (msg.event === "phase") mark(phaseOf(msg.data.phase), msg.data.round || 0);
    else if (order.includes(phaseOf(msg.event))) mark(phaseOf(msg.event), msg.data.round);
    else if (msg.event === "round" && msg.data.phase) mark(phaseOf(msg.data.phase), msg.data.round);
  };
})();
