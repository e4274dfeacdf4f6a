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

// Copy buttons beside SHAs ({% sha %}): copy the full SHA, say so on the button for a moment.
// The clipboard API needs a secure context; elsewhere a hidden textarea and execCommand stand in.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const text = button.dataset.copy;
  let copied = false;
  try {
    await navigator.clipboard.writeText(text);
    copied = true;
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.append(area);
    area.select();
    copied = document.execCommand("copy");
    area.remove();
  }
  const label = button.textContent;
  button.textContent = copied ? "Copied" : "Copy failed";
  button.dataset.copied = copied ? "true" : "false";
  setTimeout(() => {
    button.textContent = label === "Copied" || label === "Copy failed" ? "Copy" : label;
    delete button.dataset.copied;
  }, 1500);
});

// A change's detail page polls its live part and swaps the approvals and action forms out of band
// (data-keep-while-editing): leave such a block alone while someone is filling in one of its forms,
// so a poll never wipes a half-written reason. The next poll after they leave it catches up.
document.addEventListener("htmx:oobBeforeSwap", (event) => {
  const target = event.detail.target;
  if (!(target instanceof Element) || !target.hasAttribute("data-keep-while-editing")) return;
  const fields = [...target.querySelectorAll("textarea, input[type=text]")];
  const editing =
    target.contains(document.activeElement) ||
    fields.some((field) => field.value) ||
    [...target.querySelectorAll("details")].some((panel) => panel.open);
  if (editing) event.detail.shouldSwap = false;
});
