// Tollgate dashboard: holds in flight. The summary brings them (dashboard.js
// passes each summary on as a "tollgate:summary" event); then this re-reads
// GET /v1/dashboard/holds with the page's filters (its URL) every
// POLL_MS while the page is visible. Holds live for seconds, and the hold
// path sends nothing for the page: a re-read of the active holds (one
// indexed query, shared by everyone watching the same org and filters for a
// second on the server) costs the hot path nothing.

const config = JSON.parse(document.getElementById("dashboard-config").textContent);
const byId = (id) => document.getElementById(id);

const POLL_MS = 2000;
const usd = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
const count = new Intl.NumberFormat("en-US");

let seen = new Set(); // hold ids shown last time: new ones are highlighted
let timer = null;

function money(text) {
  const n = Number(text);
  return n > 0 && n < 0.01 ? `$${n.toPrecision(2)}` : usd.format(n);
}

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function render(holds) {
  byId("holds-count").textContent = `${count.format(holds.count)} active`;
  byId("holds-held").textContent = holds.count ? `${money(holds.held_usd)} held` : "";
  const rows = [...holds.largest];
  for (const hold of holds.newest) if (!rows.some((r) => r.id === hold.id)) rows.push(hold);
  const table = byId("holds-list");
  if (!rows.length) {
    const tr = document.createElement("tr");
    tr.append(cell("No hold in flight", "empty"));
    table.replaceChildren(tr);
  } else {
    table.replaceChildren(...rows.map((hold) => {
      const tr = document.createElement("tr");
      tr.dataset.holdId = hold.id;
      if (!seen.has(hold.id)) tr.className = "new";
      const who = [hold.team, hold.user].filter(Boolean).join(" / ") || "(org)";
      tr.append(cell(who, "name"), cell(hold.model ?? "–", "muted"), cell(money(hold.held_usd), "num"));
      tr.title = `taken ${hold.created_at}, expires ${hold.expires_at}`;
      return tr;
    }));
  }
  seen = new Set(rows.map((r) => r.id));
  byId("holds-card").dataset.count = String(holds.count);
}

function url() {
  // The page's URL holds its org (staff), range and filters.
  const params = new URLSearchParams(location.search);
  const query = new URLSearchParams();
  if (config.switchOrg) query.set("org", config.org);
  for (const name of ["team", "user", "model", "tag"]) {
    const value = params.get(name);
    if (value) query.set(name, value);
  }
  return `${config.holdsUrl}?${query}`;
}

async function poll() {
  timer = null;
  if (document.visibilityState === "visible") {
    try {
      const response = await fetch(url(), { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.ok) render(await response.json());
    } catch {
      // Offline for a moment: the next round tries again.
    }
  }
  schedule();
}

function schedule() {
  if (timer !== null) clearTimeout(timer);
  timer = setTimeout(poll, POLL_MS);
}

document.addEventListener("tollgate:summary", (event) => {
  if (event.detail.holds) render(event.detail.holds);
  schedule();
});
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") poll();
});
