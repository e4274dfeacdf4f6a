// Small progressive enhancements; every page works without them.
document.addEventListener("htmx:responseError", (event) => {
  const target = document.getElementById("htmx-error");
  if (target) {
    target.textContent = `The server answered ${event.detail.xhr.status}; the data shown may be out of date.`;
    target.hidden = false;
  }
});
document.addEventListener("htmx:afterSwap", () => {
  const target = document.getElementById("htmx-error");
  if (target) target.hidden = true;
});
