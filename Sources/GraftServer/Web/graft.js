// Graft's web view: what scripts add to pages that already read without them.
"use strict";

// Lineage: "+ N more" expands in place — the server renders the same subtree as a fragment.
document.addEventListener("click", async (event) => {
  const link = event.target.closest("a.expand[data-fragment]");
  if (!link) return;
  event.preventDefault();
  const list = link.closest("ul");
  link.textContent = "loading…";
  try {
    const response = await fetch(link.dataset.fragment, { credentials: "same-origin" });
    if (!response.ok) throw new Error(String(response.status));
    const template = document.createElement("template");
    template.innerHTML = (await response.text()).trim();
    const fresh = template.content.firstElementChild;
    if (fresh && list) list.replaceWith(fresh); else window.location.href = link.href;
  } catch (_) {
    window.location.href = link.href;  // the same view, as a page
  }
});

// Charts: pointing at a legend entry brings its series forward.
document.addEventListener("mouseover", (event) => {
  const item = event.target.closest("ul.legend li[class^='s']");
  const figure = item && item.closest("figure.chart");
  if (!figure) return;
  const index = Array.from(item.parentElement.children).indexOf(item);
  figure.querySelectorAll("g.series").forEach((group, i) => group.classList.toggle("dim", i !== index));
});
document.addEventListener("mouseout", (event) => {
  const figure = event.target.closest("figure.chart");
  if (figure) figure.querySelectorAll("g.series.dim").forEach((group) => group.classList.remove("dim"));
});

// Filters: a changed select applies at once.
document.querySelectorAll("form.filters select").forEach((select) => {
  select.addEventListener("change", () => select.form.submit());
});
