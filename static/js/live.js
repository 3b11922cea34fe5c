// What the live run page and the live generation page share: the round progress bar, the status
// badge, the run's websocket (ws/runs/<id>/: "round" and "status" events) and the cancel form.
// window.fedhaemLive / window.fedhaemPoints let the browser tests see the socket and the points.
window.FedHaemLive = (function () {
  function setProgress(data, done) {
    data.done = Math.max(data.done, done);
    document.getElementById("progress").value = data.done;
    document.getElementById("progress-label").textContent = data.done + " of " + data.rounds;
  }
  function setStatus(status, error, onEnd) {
    const el = document.getElementById("run-status");
    el.dataset.status = status;
    el.textContent = status.charAt(0).toUpperCase() + status.slice(1);
    if (error) {
      const e = document.getElementById("run-error");
      e.textContent = (status === "failed" ? "Why it failed: " : "") + error; e.hidden = false;
    }
    const life = document.getElementById("run-lifecycle");
    if (life) {
      const words = {starting: "Starting: handing the run to the federation.",
                     running: "", concluding: "Concluding: the federation has finished; the results are being stored."};
      life.textContent = words[status] !== undefined ? words[status] : (status === "queued" ? life.textContent : "");
    }
    if (["concluding", "finished", "failed", "cancelled"].includes(status)) {
      const f = document.getElementById("cancel-form"); if (f) f.remove();
    }
    if (["finished", "failed", "cancelled"].includes(status)) {
      if (onEnd) onEnd(status);
    }
  }
  function countPoint() {
    window.fedhaemPoints++;
    const el = document.getElementById("live-points"); if (el) el.textContent = window.fedhaemPoints;
  }
  // onRound(roundData) is called for each "round" event; onEnd(status) when the run ends.
  function connect(data, onRound, onEnd, cancelQuestion) {
    window.fedhaemPoints = 0;
    window.fedhaemLive = false;
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(proto + "://" + location.host + "/ws/runs/" + data.run + "/");
    ws.onopen = function () { window.fedhaemLive = true; };
    ws.onclose = function () { window.fedhaemLive = false; };
    ws.onmessage = function (ev) {
      const msg = JSON.parse(ev.data);
      if (msg.event === "round") { onRound(msg.data); setProgress(data, msg.data.round); }
      else if (msg.event === "status") setStatus(msg.data.status, msg.data.error, onEnd);
    };
    window.fedhaemCancel = function (ev) {
      ev.preventDefault();
      if (!confirm(cancelQuestion)) return false;
      const token = document.querySelector("#cancel-form [name=csrfmiddlewaretoken]").value;
      fetch(ev.target.action, {method: "POST", headers: {"X-CSRFToken": token}, credentials: "same-origin"})
        .then(r => r.json()).then(j => setStatus(j.status || "cancelled", j.error || j.detail, onEnd))
        .catch(() => { ev.target.action = ev.target.dataset.fallback; ev.target.submit(); });
      return false;
    };
    // Bound here, not in an onsubmit attribute: the Content-Security-Policy allows no inline script.
    const cancelForm = document.getElementById("cancel-form");
    if (cancelForm) cancelForm.addEventListener("submit", window.fedhaemCancel);
    return ws;
  }
  return {connect: connect, countPoint: countPoint};
})();
