// Audit evidence pages: a print button (CSP forbids inline handlers).
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-audit-print]");
  if (button) {
    event.preventDefault();
    window.print();
  }
});
