// Study form: show the hyper-parameters of the chosen model and only the datasets that fit the
// chosen disease and feature groups. The server checks the same rules again on save.
(function () {
  const meta = JSON.parse(document.getElementById("dataset-meta").textContent);
  const kind = document.getElementById("id_model_kind");
  const useCase = document.getElementById("id_use_case");
  function groups() {
    return Array.from(document.querySelectorAll("input[name=feature_groups]:checked")).map(i => i.value);
  }
  function showKind() {
    document.querySelectorAll("[data-kind]").forEach(el => { el.hidden = el.dataset.kind !== kind.value; });
  }
  function filterDatasets() {
    const want = groups();
    let hidden = 0;
    document.querySelectorAll("#field-datasets .choice").forEach(el => {
      const m = meta[el.dataset.value];
      const box = el.querySelector("input");
      const fits = !m || (m.use_case === useCase.value && want.every(g => m.groups.includes(g)));
      // A checked dataset stays visible so that the server's error about it can be read and fixed.
      el.hidden = !fits && !box.checked;
      if (el.hidden) hidden++;
    });
    document.getElementById("datasets-filter-note").hidden = hidden === 0;
  }
  const endpoints = JSON.parse(document.getElementById("endpoints-by-use-case").textContent);
  const endpoint = document.getElementById("id_endpoint");
  function filterEndpoints() {
    const allowed = endpoints[useCase.value] || [];
    Array.from(endpoint.options).forEach(o => { o.disabled = !allowed.includes(o.value); });
  }
  kind.addEventListener("change", showKind);
  useCase.addEventListener("change", filterEndpoints);
  useCase.addEventListener("change", filterDatasets);
  document.querySelectorAll("input[name=feature_groups]").forEach(i => i.addEventListener("change", filterDatasets));
  showKind();
  filterEndpoints();
  filterDatasets();
})();
