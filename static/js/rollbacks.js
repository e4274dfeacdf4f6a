// Rollback form: refresh the preview when the mode changes, show the SHA field only when needed,
// and the justification only for emergencies. The form works without this script.
(function () {
  const form = document.getElementById("rollback-form");
  if (!form) return;
  const shaField = document.getElementById("sha-field");
  const targets = document.getElementById("target-field");
  const justification = document.getElementById("justification-field");
  const emergency = form.querySelector("input[name=emergency]");

  function mode() {
    const checked = form.querySelector("input[name=mode]:checked");
    return checked ? checked.value : "previous";
  }

  function sync() {
    if (shaField) shaField.hidden = mode() !== "commit";
    if (targets) targets.hidden = mode() !== "previous";
    if (justification && emergency) justification.hidden = !emergency.checked;
  }

  function refreshPreview() {
    if (!window.htmx) return;
    const params = new URLSearchParams({
      app: form.querySelector("input[name=app]").value,
      env: form.querySelector("input[name=env]").value,
      mode: mode(),
      sha: (form.querySelector("input[name=sha]") || { value: "" }).value,
      target: (form.querySelector("input[name=target]:checked") || { value: "" }).value,
    });
    window.htmx.ajax("GET", form.getAttribute("action") + "?" + params.toString(), { target: "#preview", swap: "innerHTML" });
  }

  form.querySelectorAll("input[name=mode]").forEach((radio) => {
    radio.addEventListener("change", () => {
      sync();
      refreshPreview();
    });
  });
  if (emergency) emergency.addEventListener("change", sync);
  sync();
})();
