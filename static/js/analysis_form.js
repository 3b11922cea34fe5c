// The study form's Analysis section: its settings show only when the box is ticked, and the
// columns of the chosen disease are listed (and offered for "Group by") so that nobody has to
// guess a column name. The server validates whatever is typed (fl_engine.analytics.settings).
(function () {
  const box = document.getElementById("id_an_enabled");
  const settings = document.getElementById("analysis-settings");
  const useCase = document.getElementById("id_use_case");
  const columns = JSON.parse(document.getElementById("analysis-columns-by-use-case").textContent);
  const list = document.getElementById("analysis-group-by");
  const hint = document.getElementById("analysis-columns");
  const groupBy = document.getElementById("id_an_group_by");
  if (!box || !settings) return;
  function show() { settings.hidden = !box.checked; }
  function describe() {
    const c = columns[useCase.value];
    list.replaceChildren();
    if (!c) { hint.textContent = ""; return; }
    c.group_by.forEach(function (name) {
      const o = document.createElement("option"); o.value = name; list.appendChild(o);
    });
    hint.textContent = "Columns of " + useCase.value + ": numeric " + c.numeric.join(", ") +
      "; categorical and yes/no " + c.categorical.join(", ") +
      ". Default Cox covariates: " + c.default_covariates.join(", ") + ".";
  }
  if (groupBy) groupBy.setAttribute("list", "analysis-group-by");
  box.addEventListener("change", show);
  useCase.addEventListener("change", describe);
  show(); describe();
})();
