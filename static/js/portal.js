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

// A page answers a bad filter with 400 and its field errors: htmx swaps that answer in like a 200
// (it leaves 4xx/5xx out by default), so the error shows where the results would.
document.addEventListener("htmx:beforeSwap", (event) => {
  if (event.detail.xhr && event.detail.xhr.status === 400) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});

// Filter panels start folded on small screens (they would fill more than a screen) unless the page
// is filtered already; without this script they stay open.
(() => {
  if (!window.matchMedia("(max-width: 640px)").matches) return;
  for (const panel of document.querySelectorAll("details[data-collapse-small]")) {
    const form = panel.querySelector("form");
    const active = form && [...new FormData(form).entries()].some(([name, value]) => name !== "csrfmiddlewaretoken" && value);
    if (!active) panel.open = false;
  }
})();
