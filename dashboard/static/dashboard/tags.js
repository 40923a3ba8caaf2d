// The dashboard's "Spend by tag" card (templates/dashboard/_tags.html). The
// chosen tag travels in the page URL as `group_tag`, which dashboard.js adds
// to its one summary fetch; the summary's `tag_breakdown` arrives with the
// `tollgate:summary` event it sends after each load. Choosing a tag asks
// dashboard.js to load again (`tollgate:reload`). The card also links the
// chargeback report of the chosen tag (GET /dashboard/export/chargeback).

const config = JSON.parse(document.getElementById("dashboard-config").textContent);
const select = document.getElementById("tag-group");
const table = document.getElementById("tag-values");
const note = document.getElementById("tag-note");
const chargeback = document.getElementById("chargeback");
const usd = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
const count = new Intl.NumberFormat("en-US");

function chosen() {
  return new URLSearchParams(location.search).get("group_tag") || "";
}

function cell(text, attrs = {}) {
  const td = document.createElement("td");
  for (const [name, value] of Object.entries(attrs)) td.setAttribute(name, value);
  td.textContent = text;
  return td;
}

// Why a chosen tag has no breakdown: the tag rollups keep no end user, and
// hold one tag name each (so not another name's values under a tag filter).
function missing(summary, tag) {
  if (!summary) return "";
  const filter = summary.tag_filter;
  if (filter && filter.name !== tag) return `not split under the tag filter ${filter.name}=${filter.value}`;
  if (summary.user) return "not split by end user";
  return "";
}

function render(summary) {
  const breakdown = summary ? summary.tag_breakdown : null;
  const tag = chosen();
  select.value = tag;
  if (chargeback) {
    const params = new URLSearchParams({ tag });
    if (config.switchOrg) params.set("org", config.org);
    chargeback.href = `/dashboard/export/chargeback?${params}`;
    chargeback.hidden = !tag;
  }
  if (!table) return;
  if (!tag || !breakdown) {
    table.replaceChildren();
    note.textContent = tag ? missing(summary, tag) : "";
    return;
  }
  const values = breakdown.values;
  const total = values.reduce((sum, v) => sum + Number(v.spend_usd), 0);
  note.textContent = breakdown.tags_from ? `split from ${new Date(breakdown.tags_from).toLocaleString()}` : "";
  if (!values.length) {
    const row = document.createElement("tr");
    row.append(cell("No spend in this range", { class: "empty" }));
    table.replaceChildren(row);
    return;
  }
  table.replaceChildren(...values.map((v) => {
    const row = document.createElement("tr");
    const label = v.other ? "other values" : v.value ?? `(no ${tag})`;
    const share = cell("", { class: "share" });
    const bar = document.createElement("div");
    bar.className = "share-bar";
    bar.style.width = `${total > 0 ? (100 * Number(v.spend_usd)) / total : 0}%`;
    share.append(bar);
    row.append(cell(label, { class: "name", title: label }), share,
      cell(usd.format(Number(v.spend_usd)), { class: "num" }),
      cell(`${count.format(v.requests)} req`, { class: "num" }));
    return row;
  }));
}

select?.addEventListener("change", () => {
  const params = new URLSearchParams(location.search);
  if (select.value) params.set("group_tag", select.value);
  else params.delete("group_tag");
  history.replaceState(null, "", `?${params}`);
  document.dispatchEvent(new CustomEvent("tollgate:reload"));
});
document.addEventListener("tollgate:summary", (event) => render(event.detail));
render(null);
