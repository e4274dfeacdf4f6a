// Keep the matrix's horizontal scroll position across the 15-second htmx refresh.
(() => {
  let scrollLeft = 0;
  document.addEventListener("htmx:beforeSwap", (event) => {
    const wrap = document.querySelector("#matrix-grid .table-wrap");
    if (wrap && event.detail.target && event.detail.target.id === "matrix-grid") scrollLeft = wrap.scrollLeft;
  });
  document.addEventListener("htmx:afterSettle", () => {
    const wrap = document.querySelector("#matrix-grid .table-wrap");
    if (wrap && scrollLeft) wrap.scrollLeft = scrollLeft;
  });
})();
