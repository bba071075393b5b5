// robust-prune-bench static site: sortable tables and filters. No dependencies, no requests.
"use strict";

function cellKey(row, index) {
  const cell = row.cells[index];
  if (!cell) return "";
  return cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
}

function compareKeys(a, b) {
  const x = parseFloat(a), y = parseFloat(b);
  const xNum = a !== "" && !isNaN(x) && isFinite(a), yNum = b !== "" && !isNaN(y) && isFinite(b);
  if (xNum && yNum) return x - y;
  if (xNum !== yNum) return xNum ? -1 : 1;  // numbers before text and blanks
  return a.localeCompare(b);
}

function sortTable(table, index, header) {
  const body = table.tBodies[0];
  if (!body) return;
  const descending = header.getAttribute("aria-sort") === "ascending";
  for (const th of table.tHead.rows[0].cells) th.removeAttribute("aria-sort");
  header.setAttribute("aria-sort", descending ? "descending" : "ascending");
  const rows = Array.from(body.rows);
  rows.sort((r1, r2) => {
    const c = compareKeys(cellKey(r1, index), cellKey(r2, index));
    return descending ? -c : c;
  });
  for (const row of rows) body.appendChild(row);
}

function applyFilters(form) {
  const target = document.getElementById(form.dataset.for);
  if (!target) return;
  const words = [];
  const attrs = [];
  const hides = [];
  for (const el of form.querySelectorAll("[data-filter]")) {
    const kind = el.dataset.filter;
    if (kind === "text") {
      words.push(...el.value.toLowerCase().split(/\s+/).filter(Boolean));
    } else if (kind === "attr" && el.value !== "") {
      attrs.push([el.dataset.attr, el.value]);
    } else if (kind === "hide" && el.checked) {
      hides.push([el.dataset.attr, el.dataset.value]);
    }
  }
  let shown = 0, total = 0;
  for (const row of target.querySelectorAll("table.filterable tbody tr")) {
    total += 1;
    const text = row.textContent.toLowerCase();
    const ok = words.every((w) => text.includes(w))
      && attrs.every(([k, v]) => row.dataset[k] === v)
      && hides.every(([k, v]) => row.dataset[k] !== v);
    row.classList.toggle("hidden", !ok);
    if (ok) shown += 1;
  }
  for (const section of target.querySelectorAll("section.group")) {
    const visible = section.querySelectorAll("tbody tr:not(.hidden)").length;
    section.classList.toggle("hidden", visible === 0);
  }
  const label = form.querySelector(".shown");
  if (label) label.textContent = `${shown} of ${total} rows shown`;
}

document.addEventListener("DOMContentLoaded", () => {
  for (const table of document.querySelectorAll("table.sortable")) {
    if (!table.tHead) continue;
    Array.from(table.tHead.rows[0].cells).forEach((th, index) => {
      th.addEventListener("click", () => sortTable(table, index, th));
    });
  }
  for (const form of document.querySelectorAll("form.filters")) {
    for (const el of form.querySelectorAll("[data-filter]")) {
      el.addEventListener("input", () => applyFilters(form));
      el.addEventListener("change", () => applyFilters(form));
    }
    applyFilters(form);
  }
});
