// Tollgate dashboard. One fetch of GET /v1/dashboard/summary fills the page;
// the WebSocket /ws/spend/ then adds each recorded request to the KPIs, the
// chart, the recent list and the budget bars without a reload. No libraries:
// the chart is a few SVG rectangles.
//
// Exactly once: the socket joins first and the summary loads after each
// join. Every live event and total names the transaction that recorded it
// (`xid`); the summary says which transactions its statements saw
// (`snapshot` for the KPIs and recent list, `chart_snapshot` for the chart
// and top lists) and brings the updates its server heard meanwhile
// (`updates`), so the page adds what the summary did not see, once.
//
// Money arrives as decimal strings; sums are kept exact as BigInt units of
// 1e-10 USD and turned into numbers only to be displayed.

import { forecastBasis, forecastLine } from "./forecast.js";

const config = JSON.parse(document.getElementById("dashboard-config").textContent);
const byId = (id) => document.getElementById(id);

// What the page shows, as its URL says (range, a custom range's dates,
// filters): a reload or a shared link opens the same view.
const FILTERS = ["range", "from", "to", "team", "user", "model", "tag"];

const state = {
  range: config.range,
  from: config.from, // YYYY-MM-DD, with range "custom"
  to: config.to,
  team: config.team,
  user: config.user,
  model: config.model,
  tag: config.tag, // a tag filter, name=value
  summary: null,
  fresh: new Set(), // ids of requests that arrived live, highlighted once
  heard: [], // [time received, message] of the live updates of the last LOG_MS
  applied: new Set(), // ids of the live messages added to the summary shown
  covered: new Map(), // sender -> [[first, last], ...] of the summary's `updates`
};

// Live updates are kept this long, to be added to a summary loaded later (a
// filter change) that did not see them: longer than a server keeps a summary.
const LOG_MS = 120000;
// How long the first load waits for the socket to join.
const SOCKET_WAIT_MS = 2000;

// ---- Money and time ---------------------------------------------------------

const SCALE = 10n ** 10n;

function units(text) {
  if (text === null || text === undefined) return 0n;
  let [whole, frac = ""] = String(text).split(".");
  const negative = whole.startsWith("-");
  whole = whole.replace("-", "") || "0";
  const value = BigInt(whole) * SCALE + BigInt((frac + "0000000000").slice(0, 10));
  return negative ? -value : value;
}

function decimalText(value) {
  const negative = value < 0n;
  const abs = negative ? -value : value;
  const frac = (abs % SCALE).toString().padStart(10, "0").replace(/0+$/, "");
  return (negative ? "-" : "") + (abs / SCALE).toString() + (frac ? "." + frac : "");
}

const usd = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
const usdShort = new Intl.NumberFormat("en-US", {
  style: "currency", currency: "USD", notation: "compact", maximumFractionDigits: 1,
});
const count = new Intl.NumberFormat("en-US");

function money(text) {
  return usd.format(Number(text));
}

// Single requests cost fractions of a cent: show enough digits to tell them apart.
function smallMoney(text) {
  const n = Number(text);
  if (n === 0 || Math.abs(n) >= 1) return usd.format(n);
  return "$" + n.toFixed(n >= 0.01 ? 4 : 6);
}

// Money as people read it, like usd_for_people (config/hotpath/inputs.py):
// "$1,234.50", "$1.27"; under a cent two significant digits ("$0.00041"),
// so that a small amount never reads as $0.00.
function peopleMoney(text) {
  const n = Number(text);
  const abs = Math.abs(n);
  if (abs > 0 && abs < 0.01) {
    const digits = 1 - Math.floor(Math.log10(abs));
    const rounded = abs.toFixed(digits);
    if (Number(rounded) < 0.01) return (n < 0 ? "-$" : "$") + rounded.replace(/0+$/, "");
  }
  return usd.format(n);
}

function axisMoney(n) {
  return n >= 1000 ? usdShort.format(n) : "$" + (Number.isInteger(n) ? n : n.toFixed(2));
}

function timeFormat(options) {
  return new Intl.DateTimeFormat("en-US", { timeZone: state.summary.org.time_zone, ...options });
}

function timeAgo(iso) {
  const minutes = Math.round((Date.now() - Date.parse(iso)) / 60000);
  if (minutes < 1) return "just now";
  if (minutes < 90) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.round(hours / 24)} days ago`;
}

function relativeTime(iso) {
  if (!iso) return "never";
  const minutes = Math.round((Date.parse(iso) - Date.now()) / 60000);
  if (minutes < 1) return "now";
  if (minutes < 90) return `in ${minutes} min`;
  const hours = Math.round(minutes / 60);
  if (hours < 48) return `in ${hours} h`;
  return `in ${Math.round(hours / 24)} days`;
}

// ---- DOM helpers (text only: ids come from gateways and are never HTML) -------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "style") el.style.cssText = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  if (text !== undefined) el.textContent = text;
  return el;
}

// ---- Rendering ----------------------------------------------------------------

const RANGE_NOTES = {
  "24h": "last 24 hours", "7d": "last 7 days", "30d": "last 30 days", mtd: "this month",
  last_month: "last month", custom: "custom range",
};

function rangeNote(summary) {
  if (summary.range !== "custom") return RANGE_NOTES[summary.range];
  const day = new Intl.DateTimeFormat("en-US", { month: "short", day: "numeric", year: "numeric", timeZone: "UTC" });
  const first = day.format(new Date(summary.from_date));
  return summary.from_date === summary.to_date ? first : `${first} – ${day.format(new Date(summary.to_date))}`;
}
const PALETTE = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#0891b2", "#db2777"];
const OTHER_COLOR = "#94a3b8";
const NONE_COLOR = "#cbd5e1";

function setKpi(id, value, note) {
  const el = byId(`kpi-${id}`);
  if (el.textContent !== value && el.textContent !== "–") {
    const card = el.closest(".kpi");
    card.classList.remove("flash");
    void card.offsetWidth; // restart the animation
    card.classList.add("flash");
  }
  el.textContent = value;
  if (note !== undefined) byId(`kpi-${id}-note`).textContent = note;
}

function renderKpis() {
  const k = state.summary.kpis;
  setKpi("spend", money(k.spend_usd), rangeNote(state.summary));
  setKpi("today", money(k.today_usd));
  setKpi("mtd", money(k.month_to_date_usd),
    `${timeFormat({ month: "long" }).format(new Date(k.month_starts_at))}, so far`);
  setKpi("projected", money(k.projected_month_usd));
  setKpi("requests", count.format(k.requests), `${count.format(k.errors)} failed`);
  setKpi("errors", k.error_rate_pct === null ? "–" : `${k.error_rate_pct}%`, `of ${count.format(k.requests)} requests`);
  // What the models with no price were charged (a hold or a fallback rate)
  // and their names, costliest first; live updates add to both.
  const names = (k.unpriced_models || []).map((m) => m.model);
  setKpi("unpriced", count.format(k.unpriced_requests),
    names.length === 0 ? "requests without a price"
      : `${peopleMoney(k.unpriced_usd)} charged · ${names.slice(0, 5).join(", ")}`
        + (names.length > 5 ? ` and ${names.length - 5} more` : ""));
  byId("kpi-unpriced").closest(".kpi").classList.toggle("warn", k.unpriced_requests > 0);
}

function seriesLabel(series, splitBy) {
  if (series.other) return "other";
  if (series.key === null) return splitBy === "team" ? "(no team)" : "(none)";
  return series.key;
}

function seriesColor(series, index) {
  if (series.other) return OTHER_COLOR;
  if (series.key === null) return NONE_COLOR;
  return PALETTE[index % PALETTE.length];
}

function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const f of [1, 2, 2.5, 5, 10]) if (f * power >= raw) return f * power;
  return 10 * power;
}

function renderChart() {
  const { chart, granularity } = state.summary;
  const container = byId("chart");
  // Drawn at the card's width (760 at most), not scaled down to it: on a
  // phone a 760-wide drawing would shrink its 11 px labels to 5 px.
  const W = Math.min(760, Math.max(280, Math.round(container.clientWidth) || 760));
  const narrow = W < 500;
  const H = narrow ? 220 : 260, left = 58, right = 8, top = 10, bottom = 26;
  const plotW = W - left - right, plotH = H - top - bottom;
  const n = chart.buckets.length;
  const totals = chart.buckets.map((_, i) =>
    chart.series.reduce((sum, series) => sum + Number(series.values[i]), 0));
  const peak = Math.max(0, ...totals);
  const step = peak > 0 ? niceStep(peak / 4) : 1;
  const max = peak > 0 ? Math.ceil(peak / step) * step : 4;

  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Spend over time" });
  const grid = s("g", { class: "grid" });
  for (let v = 0; v <= max + 1e-9; v += step) {
    const y = top + plotH - (v / max) * plotH;
    grid.append(s("line", { x1: left, x2: W - right, y1: y, y2: y }));
    grid.append(s("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, axisMoney(v)));
  }
  svg.append(grid);

  const band = plotW / n;
  const barW = Math.max(2, band * 0.7);
  const label = granularity === "hour"
    ? timeFormat({ hour: "2-digit", minute: "2-digit", hourCycle: "h23" })
    : timeFormat({ month: "short", day: "numeric" });
  const full = granularity === "hour"
    ? timeFormat({ weekday: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23" })
    : timeFormat({ weekday: "short", month: "short", day: "numeric" });
  const every = Math.ceil(n / (narrow ? 4 : 8));
  chart.buckets.forEach((bucket, i) => {
    const x = left + i * band + (band - barW) / 2;
    let y = top + plotH;
    chart.series.forEach((series, j) => {
      const value = Number(series.values[i]);
      if (value <= 0) return;
      const height = (value / max) * plotH;
      y -= height;
      const rect = s("rect", {
        x: x.toFixed(1), y: y.toFixed(1), width: barW.toFixed(1), height: Math.max(height, 0.5).toFixed(1),
        fill: seriesColor(series, j),
      });
      rect.append(s("title", {}, `${full.format(new Date(bucket))} · ${seriesLabel(series, chart.split_by)}: ${money(series.values[i])}`));
      svg.append(rect);
    });
    if (i % every === 0) {
      svg.append(s("text", { x: (x + barW / 2).toFixed(1), y: H - 8, "text-anchor": "middle" },
        label.format(new Date(bucket))));
    }
  });
  if (peak === 0) {
    svg.append(s("text", { class: "empty", x: left + plotW / 2, y: top + plotH / 2, "text-anchor": "middle" },
      "No spend in this range"));
  }
  container.replaceChildren(svg);

  byId("chart-split").textContent = `by ${chart.split_by}, per ${granularity}`;
  byId("legend").replaceChildren(...chart.series.map((series, j) =>
    h("li", {},
      h("span", { class: "swatch", style: `background:${seriesColor(series, j)}` }),
      seriesLabel(series, chart.split_by),
      h("span", { class: "amount" }, money(series.total_usd)))));
}

const SCOPE_LABELS = { org: "Organization", team: "Team", user: "User", key: "API key", tag: "Tag" };

// Most used first (spent and held over the limit; a zero limit with use
// first, unused last), as the summary sorts them (tollgate_dashboard_budgets):
// live updates bring the org's budgets in their own order.
function utilization(b) {
  const used = units(b.spent_usd) + units(b.reserved_usd);
  const limit = units(b.limit_usd);
  if (limit > 0n) return Number((used * 1000000n) / limit);
  return used > 0n ? Infinity : 0;
}

// A model-filtered budget is another budget of the same subject: its filter is part of its name.
function budgetKey(b) {
  return `${b.scope}:${b.id}:${b.period}${b.model ? `:${b.model}` : ""}`;
}

function renderBudgets() {
  const budgets = state.summary.budgets;
  const container = byId("budgets");
  byId("forecast-basis").textContent = forecastBasis(budgets);
  byId("budgets-scope").textContent = budgetScope();
  if (!budgets.length) {
    container.replaceChildren(h("p", { class: "empty" },
      state.team || state.user ? "No budget counts this spend." : "No budgets yet."));
    return;
  }
  container.replaceChildren(...budgets.map((b) => {
    const limit = Number(b.limit_usd), spent = Number(b.spent_usd), reserved = Number(b.reserved_usd);
    const used = limit > 0 ? ((spent + reserved) / limit) * 100 : (spent + reserved > 0 ? Infinity : 0);
    // The bar spans the limit, or more when the budget is over it (up to 2x).
    const span = Math.min(Math.max(100, used), 200);
    const pos = (pct) => `${Math.min((pct / span) * 100, 100).toFixed(2)}%`;
    const spentPct = limit > 0 ? (spent / limit) * 100 : (spent > 0 ? span : 0);
    const reservedPct = limit > 0 ? (reserved / limit) * 100 : 0;
    const level = used >= 100 ? "over" : used >= b.soft_limit_pct ? "warn" : "ok";
    return h("div", { class: `budget ${level}`, "data-budget": budgetKey(b), "data-scope": b.scope,
                      "data-id": b.id, "data-period": b.period, "data-model": b.model || "" },
      h("div", { class: "budget-head" },
        h("span", { class: "name", title: b.id }, `${SCOPE_LABELS[b.scope]} ${b.scope === "org" ? "" : b.id}`.trim()),
        h("span", { class: "tag" }, b.period),
        b.model ? h("span", { class: "tag", title: "counts only these models" }, b.model) : null,
        b.enforce ? null : h("span", { class: "tag" }, "monitor only"),
        h("span", { class: "pct" }, b.used_pct === null ? "–" : `${b.used_pct}%`)),
      h("div", {
        class: "bar", role: "meter", "aria-valuemin": 0, "aria-valuemax": 100,
        "aria-valuenow": Number.isFinite(used) ? used.toFixed(1) : 100,
        title: `soft limit ${b.soft_limit_pct}% · hard limit 100%`,
      },
        h("span", { class: "fill spent", style: `width:${pos(spentPct)}` }),
        h("span", { class: "fill reserved", style: `left:${pos(spentPct)};width:calc(${pos(spentPct + reservedPct)} - ${pos(spentPct)})` }),
        h("span", { class: "mark soft", style: `left:${pos(b.soft_limit_pct)}`, title: `soft limit ${b.soft_limit_pct}%` }),
        h("span", { class: "mark hard", style: `left:${pos(100)}`, title: b.enforce ? "hard limit" : "limit (not enforced)" })),
      h("div", { class: "budget-foot" },
        `${money(b.spent_usd)} spent`,
        reserved > 0 ? ` + ${money(b.reserved_usd)} held` : "",
        ` of ${money(b.limit_usd)} · `,
        h("span", { class: "remaining" }, `${money(b.remaining_usd)} left`),
        b.resets_at
          ? h("span", { title: b.resets_at }, ` · resets ${relativeTime(b.resets_at)} (${timeFormat({
            month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23" }).format(new Date(b.resets_at))})`)
          : " · no reset"),
      h("div", { class: "budget-forecast" }, forecastLine(b, money, state.summary.org.time_zone)));
  }));
}

function renderTop(id, rows, emptyLabel) {
  const table = byId(id);
  if (!rows.length) {
    table.replaceChildren(h("tr", {}, h("td", { class: "empty" }, "Nothing in this range")));
    return;
  }
  const first = Number(rows[0].spend_usd) || 1;
  table.replaceChildren(...rows.map((row) =>
    h("tr", {},
      h("td", { class: "name", title: row.id ?? emptyLabel }, row.id ?? emptyLabel),
      h("td", { class: "share" }, h("div", { class: "share-bar", style: `width:${(Number(row.spend_usd) / first) * 100}%` })),
      h("td", { class: "num" }, money(row.spend_usd)),
      h("td", { class: "num muted" }, count.format(row.requests)))));
}

// A panel the tag filter cannot narrow (the summary's tag_filter.not_followed)
// says so instead of showing the unfiltered numbers.
function notFollowed(panel) {
  const filter = state.summary.tag_filter;
  return Boolean(filter && filter.not_followed.includes(panel));
}

function renderTops() {
  const { top } = state.summary;
  renderTop("top-teams", top.teams, "(no team)");
  renderTop("top-models", top.models, "–");
  const hidden = notFollowed("top.users");
  byId("top-users-note").textContent = hidden ? "not split by tag" : "";
  if (hidden) {
    byId("top-users").replaceChildren(h("tr", {}, h("td", { class: "empty" },
      "Tag usage keeps no end user: top users cannot follow the tag filter.")));
  } else {
    renderTop("top-users", top.users, "(no user)");
  }
}

// Under a tag filter: which tag, since when its spend is known by tag, and
// how the page stays current (live updates carry no tags).
function renderTagNote() {
  const note = byId("tag-filter-note");
  const filter = state.summary && state.summary.tag_filter;
  note.hidden = !filter;
  if (!filter) return;
  const since = Date.parse(filter.tags_from) > Date.parse(state.summary.from)
    ? ` Spend by tag is known from ${new Date(filter.tags_from).toLocaleString()}; earlier spend of the range is not counted.`
    : "";
  note.textContent = `Only requests tagged ${filter.name}=${filter.value}.${since} `
    + "Top users are not split by tag. New spend shows by reloading every few seconds.";
}

function renderRecent() {
  const recent = state.summary.recent;
  const body = byId("recent");
  if (!recent.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No requests yet")));
    return;
  }
  const today = timeFormat({ year: "numeric", month: "2-digit", day: "2-digit" });
  const clock = timeFormat({ hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  const dated = timeFormat({ month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  const now = today.format(new Date());
  body.replaceChildren(...recent.map((r) => {
    const at = new Date(r.started_at);
    return h("tr", { "data-event-id": r.id, class: state.fresh.has(r.id) ? "new" : null },
      h("td", { title: r.started_at }, today.format(at) === now ? clock.format(at) : dated.format(at)),
      h("td", {}, r.team ?? "–"),
      h("td", {}, r.user ?? "–"),
      h("td", {}, r.model),
      h("td", { class: "num" }, count.format(r.tokens)),
      h("td", { class: "num" }, smallMoney(r.cost_usd)),
      h("td", { class: "num" }, r.latency_ms === null ? "–" : `${count.format(r.latency_ms)} ms`),
      h("td", {},
        h("span", { class: `badge ${r.status}` }, r.status),
        r.priced ? null : " ",
        r.priced ? null : h("span", { class: "badge unpriced" }, "unpriced")));
  }));
  state.fresh.clear();
}

// Each alert with when it fired (in the org's zone, and how long ago), so
// that yesterday's "hard limit reached" does not read as current, and its
// message as the summary writes it (money as people read it: the server's
// usd_for_people; a budget's threshold, or a model that has no price).
function renderAlerts() {
  const alerts = state.summary.alerts;
  const fired = timeFormat({ month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
                             hourCycle: "h23", timeZoneName: "short" });
  byId("alerts").replaceChildren(alerts.length
    ? h("ul", {}, ...alerts.map((a) => h("li", { "data-alert-id": a.id, "data-kind": a.kind },
        h("time", { datetime: a.created_at, title: a.created_at },
          `${fired.format(new Date(a.created_at))} (${timeAgo(a.created_at)})`),
        ` · ${a.message}`)))
    : h("p", { class: "empty" }, "No open alerts."));
}

// What the budgets panel shows under the filters (tollgate_dashboard_budgets).
function budgetScope() {
  if (state.tag) return `org${state.team ? `, team ${state.team} and its keys` : ""}, tag ${state.tag}`;
  if (state.team && state.user) return `org, team ${state.team} and its keys, user ${state.user}`;
  if (state.team) return `org, team ${state.team} and its keys`;
  if (state.user) return `org and user ${state.user}`;
  return "current period, most used first";
}

function renderFilters() {
  for (const link of byId("range-filter").querySelectorAll("a")) {
    link.setAttribute("aria-current", String(link.dataset.range === state.range));
    link.href = link.dataset.range === "custom" ? urlFor(customDefaults()) : urlFor({ range: link.dataset.range });
  }
  const custom = byId("custom-range");
  custom.hidden = state.range !== "custom";
  byId("range-from").value = state.from;
  byId("range-to").value = state.to;
  const select = byId("team-filter");
  const teams = state.summary ? state.summary.teams : [];
  select.replaceChildren(h("option", { value: "" }, "All teams"),
    ...teams.map((team) => h("option", { value: team }, team)));
  select.value = state.team;
  // Users and models: typed, with this range's top ten offered.
  const top = state.summary ? state.summary.top : { users: [], models: [] };
  byId("user-choices").replaceChildren(...top.users.filter((u) => u.id !== null)
    .map((u) => h("option", { value: u.id })));
  byId("model-choices").replaceChildren(...top.models.map((m) => h("option", { value: m.id })));
  byId("user-filter").value = state.user;
  byId("model-filter").value = state.model;
  // The tag filter: a reported name, then a value (the tag breakdown's
  // values of that name offered).
  const eq = state.tag.indexOf("=");
  const tagName = eq < 0 ? "" : state.tag.slice(0, eq);
  byId("tag-name-filter").value = tagName;
  byId("tag-value-filter").value = eq < 0 ? "" : state.tag.slice(eq + 1);
  const breakdown = state.summary && state.summary.tag_breakdown;
  const chosenName = byId("tag-name-filter").value;
  byId("tag-value-choices").replaceChildren(...(breakdown && breakdown.tag === chosenName
    ? breakdown.values.filter((v) => !v.other && v.value !== null).map((v) => h("option", { value: v.value }))
    : []));
  for (const link of document.querySelectorAll("a[data-export]")) {
    link.href = `/dashboard/export${urlFor()}&format=${link.dataset.export}`;
  }
}

function render() {
  renderFilters();
  renderKpis();
  renderChart();
  renderBudgets();
  renderTops();
  renderRecent();
  renderAlerts();
  renderTagNote();
}

// ---- Data ---------------------------------------------------------------------

function urlFor(changes = {}) {
  const params = new URLSearchParams();
  const chosen = { ...state, ...changes };
  if (config.switchOrg) params.set("org", config.org);
  for (const name of FILTERS) {
    if ((name === "from" || name === "to") && chosen.range !== "custom") continue;
    if (chosen[name]) params.set(name, chosen[name]);
  }
  // The tag breakdown's choice (tags.js keeps it in the page URL).
  const groupTag = new URLSearchParams(location.search).get("group_tag");
  if (groupTag) params.set("group_tag", groupTag);
  return `?${params}`;
}

// A custom range starts as the one shown (its days), else the last 7 days.
function customDefaults() {
  const s = state.summary;
  if (state.from && state.to) return { range: "custom", from: state.from, to: state.to };
  if (s && s.from_date) return { range: "custom", from: s.from_date, to: s.to_date };
  const day = (offset) => new Date(Date.now() - offset * 86400000).toISOString().slice(0, 10);
  return { range: "custom", from: day(6), to: day(0) };
}

function showError(message) {
  const banner = byId("error");
  banner.textContent = message;
  banner.hidden = !message;
}

let loadSeq = 0;

async function load() {
  const seq = ++loadSeq;
  document.body.dataset.loading = "1";
  const response = await fetch(config.summaryUrl + urlFor(), {
    headers: { Accept: "application/json" }, credentials: "same-origin",
  });
  if (seq !== loadSeq) return; // a newer filter change won
  delete document.body.dataset.loading;
  if (response.status === 401) {
    window.location.assign(`/accounts/login/?next=${encodeURIComponent(location.pathname + location.search)}`);
    return;
  }
  const body = await response.json();
  if (!response.ok) {
    showError(body.error ? body.error.message : `Error ${response.status}`);
    renderFilters();
    return;
  }
  showError("");
  state.summary = body;
  state.applied = new Set();
  state.covered = new Map();
  // What the summary's server heard since it was computed, then what this
  // page heard: each added where the summary did not see it.
  for (const message of body.updates ?? []) applyLive(message, false);
  for (const [, message] of state.heard) applyLive(message, false);
  render();
  document.dispatchEvent(new CustomEvent("tollgate:summary", { detail: body }));
  document.body.dataset.range = state.range;
  // The holds panel (holds.js) shows the summary's holds, then re-reads them.
  document.dispatchEvent(new CustomEvent("tollgate:summary", { detail: body }));
  if (!document.body.dataset.ready) {
    document.body.dataset.ready = "1";
    performance.mark("tollgate-interactive");
  }
}

function navigate(changes) {
  Object.assign(state, changes);
  if (state.range !== "custom") Object.assign(state, { from: "", to: "" });
  history.pushState(null, "", urlFor());
  load();
}

// ---- Live updates ---------------------------------------------------------------

function addMoney(object, field, amount) {
  object[field] = decimalText(units(object[field]) + amount);
}

// A top list holds at most ten. One that is not full holds everyone with spend
// in the range, so a newcomer starts from zero; in a full one, a name that is
// missing has an unknown total and waits for the next load.
function addToTop(rows, id, totals) {
  let row = rows.find((r) => r.id === id);
  if (!row) {
    if (rows.length >= 10) return;
    row = { id, spend_usd: "0", requests: 0 };
    rows.push(row);
  }
  addMoney(row, "spend_usd", units(totals.cost_usd));
  row.requests += totals.requests;
  rows.sort((a, b) => (units(b.spend_usd) > units(a.spend_usd) ? 1 : units(b.spend_usd) < units(a.spend_usd) ? -1 : 0));
}

// Unpriced spend the summary did not see: its dollars, and its model among
// the names (costliest first). The list holds at most 20: one that is not
// full holds every unpriced model of the range, so a new name joins it; in
// a full one a missing name's total is unknown and waits for the next load.
function addUnpriced(k, u, from, until) {
  if (sees(state.summary.snapshot, u.xid)) return;
  if (!matches(u)) return;
  if (Date.parse(u.hour) < from || Date.parse(u.hour) >= until) return;
  const cost = units(u.cost_usd);
  addMoney(k, "unpriced_usd", cost);
  const models = k.unpriced_models;
  let row = models.find((m) => m.model === u.model);
  if (!row) {
    if (models.length >= 20) return;
    row = { model: u.model, requests: 0, cost_usd: "0" };
    models.push(row);
  }
  row.requests += u.requests;
  addMoney(row, "cost_usd", cost);
  models.sort((a, b) => {
    const d = units(b.cost_usd) - units(a.cost_usd);
    return d > 0n ? 1 : d < 0n ? -1 : a.model < b.model ? -1 : a.model > b.model ? 1 : 0;
  });
}

// Whether a live total, unpriced sum or event is of the page's filters
// (dashboard/live.py, Shown.matches).
function matches(row) {
  if (state.tag) return false; // live rows carry no tags: the page reloads instead
  return (!state.team || row.team === state.team) && (!state.user || row.user === state.user)
    && (!state.model || row.model === state.model);
}

// Whether a statement that read `snapshot` (PostgreSQL's "xmin:xmax:xip,…")
// saw the committed transaction `xid` (dashboard/live.py, `sees`).
const snapshots = new Map(); // text -> {xmin, xmax, inProgress}, parsed once

function sees(snapshot, xid) {
  if (!snapshot || xid === null || xid === undefined) return false;
  let parsed = snapshots.get(snapshot);
  if (!parsed) {
    const [xmin, xmax, inProgress] = snapshot.split(":");
    parsed = { xmin: BigInt(xmin), xmax: BigInt(xmax), inProgress: new Set(inProgress.split(",")) };
    if (snapshots.size > 8) snapshots.clear();
    snapshots.set(snapshot, parsed);
  }
  const x = BigInt(xid);
  if (x < parsed.xmin) return true;
  if (x >= parsed.xmax) return false;
  return !parsed.inProgress.has(String(xid));
}

function covered(id) {
  const dot = id.lastIndexOf(".");
  if (dot < 0) return false; // a summary's own update, not a group message
  const ranges = state.covered.get(id.slice(0, dot));
  const number = Number(id.slice(dot + 1));
  return Boolean(ranges?.some(([first, last]) => first <= number && number <= last));
}

function applyLive(message, rerender = true) {
  const summary = state.summary;
  if (!summary || state.applied.has(message.id) || covered(message.id)) return;
  state.applied.add(message.id);
  // A summary's `updates` stand for several messages this page may also have
  // heard: by sender, ranges of their numbers ("<sender>.<number>").
  for (const [sender, ranges] of Object.entries(message.covers ?? {})) {
    state.covered.set(sender, [...(state.covered.get(sender) ?? []), ...ranges]);
  }
  const k = summary.kpis;
  const from = Date.parse(summary.from);
  // A range that ended (last month, a custom range before today) takes no
  // live spend; today and the month still do.
  const until = summary.ends_at ? Date.parse(summary.ends_at) : Infinity;
  const today = Date.parse(k.today_starts_at);
  const month = Date.parse(k.month_starts_at);
  const chart = summary.chart;
  const bucketStarts = chart.buckets.map(Date.parse);
  let news = false; // something the statement that read the budgets did not see
  for (const t of message.totals) {
    const kpis = !sees(summary.snapshot, t.xid);
    news ||= kpis; // of any team: the budgets include the org's
    if (!matches(t)) continue;
    const breakdown = !sees(summary.chart_snapshot, t.xid);
    const hour = Date.parse(t.hour);
    const cost = units(t.cost_usd);
    if (kpis && hour >= today) addMoney(k, "today_usd", cost);
    if (kpis && hour >= month) {
      addMoney(k, "month_to_date_usd", cost);
      addMoney(k, "projected_month_usd", cost);
    }
    if (hour < from || hour >= until) continue;
    if (kpis) {
      addMoney(k, "spend_usd", cost);
      k.requests += t.requests;
      k.errors += t.errors;
      k.unpriced_requests += t.unpriced_requests;
    }
    if (!breakdown) continue;
    // The chart: the bucket this hour falls in, the stack of its team (or model).
    let index = -1;
    for (let i = 0; i < bucketStarts.length && bucketStarts[i] <= hour; i++) index = i;
    if (index < 0) continue;
    const key = chart.split_by === "team" ? t.team : t.model;
    let series = chart.series.find((x) => !x.other && x.key === key) ?? chart.series.find((x) => x.other);
    if (!series) {
      series = { key, other: false, total_usd: "0", values: chart.buckets.map(() => "0") };
      chart.series.push(series);
    }
    series.values[index] = decimalText(units(series.values[index]) + cost);
    addMoney(series, "total_usd", cost);
    addToTop(summary.top.teams, t.team, t);
    addToTop(summary.top.users, t.user, t);
    addToTop(summary.top.models, t.model, t);
  }
  k.error_rate_pct = k.requests > 0 ? ((k.errors * 100) / k.requests).toFixed(2) : null;
  for (const u of message.unpriced ?? []) addUnpriced(k, u, from, until);

  const events = message.events.filter((e) => matches(e) && !sees(summary.snapshot, e.xid)
    && Date.parse(e.started_at) >= from && Date.parse(e.started_at) < until);
  if (events.length) {
    const known = new Set(summary.recent.map((r) => r.id));
    const added = events.filter((e) => !known.has(e.id));
    for (const e of added) state.fresh.add(e.id);
    summary.recent = [...added, ...summary.recent]
      .sort((a, b) => Date.parse(b.started_at) - Date.parse(a.started_at))
      .slice(0, 50);
  }
  // Read after the message's transactions committed: newer than the summary's
  // only when one of them is news to it.
  // Only the budgets the summary showed (those of its filters), most used first.
  if (message.budgets && news) {
    const shown = new Set(summary.budgets.map(budgetKey));
    summary.budgets = message.budgets.filter((b) => shown.has(budgetKey(b)))
      .sort((a, b) => utilization(b) - utilization(a) || 0);
  }
  if (!rerender) return;
  renderKpis();
  renderChart();
  renderBudgets();
  renderTops();
  renderRecent();
}

// Under a tag filter, spend heard live is read again with the filter,
// at most once every TAG_RELOAD_MS.
const TAG_RELOAD_MS = 5000;
let reloadTimer = null;

function reloadSoon() {
  if (reloadTimer !== null) return;
  reloadTimer = setTimeout(() => { reloadTimer = null; if (state.tag) load(); }, TAG_RELOAD_MS);
}

function connect(delay = 1000) {
  const status = byId("live-status");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = config.switchOrg ? `?org=${encodeURIComponent(config.org)}` : "";
  const socket = new WebSocket(`${scheme}://${location.host}${config.socketPath}${query}`);
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "hello") {
      status.dataset.state = "live";
      status.textContent = "Live";
      document.body.dataset.live = "1";
      // Joined: a summary loaded from now on misses nothing (first load, or
      // back after a drop, when updates were missed meanwhile).
      load();
      delay = 1000;
    } else if (message.type === "spend") {
      const now = Date.now();
      state.heard.push([now, message]);
      while (state.heard.length && state.heard[0][0] < now - LOG_MS) state.heard.shift();
      applyLive(message);
      if (state.tag) reloadSoon();
    }
  });
  socket.addEventListener("close", () => {
    delete document.body.dataset.live;
    status.dataset.state = "offline";
    status.textContent = "Reconnecting…";
    setTimeout(() => connect(Math.min(delay * 2, 15000)), delay);
  });
}

// ---- Start ------------------------------------------------------------------------

byId("range-filter").addEventListener("click", (event) => {
  const link = event.target.closest("a[data-range]");
  if (!link) return;
  event.preventDefault();
  if (link.dataset.range === "custom") {
    // Shows the calendar, starting from the days on screen.
    if (state.range !== "custom") navigate(customDefaults());
  } else if (link.dataset.range !== state.range) {
    navigate({ range: link.dataset.range });
  }
});
byId("team-filter").addEventListener("change", (event) => navigate({ team: event.target.value }));
document.addEventListener("tollgate:reload", () => load());
for (const name of ["user", "model"]) {
  byId(`${name}-filter`).addEventListener("change", (event) => {
    const value = event.target.value.trim();
    if (value !== state[name]) navigate({ [name]: value });
  });
}
byId("tag-name-filter").addEventListener("change", (event) => {
  const value = byId("tag-value-filter").value;
  if (!event.target.value) {
    if (state.tag) navigate({ tag: "" });
  } else if (value) {
    navigate({ tag: `${event.target.value}=${value}` });
  } else {
    byId("tag-value-filter").focus();
  }
});
byId("tag-value-filter").addEventListener("change", (event) => {
  const name = byId("tag-name-filter").value;
  const value = event.target.value;
  const tag = name && value ? `${name}=${value}` : "";
  if (tag !== state.tag && (tag || !value)) navigate({ tag });
});
byId("custom-range").addEventListener("submit", (event) => {
  event.preventDefault();
  const from = byId("range-from").value, to = byId("range-to").value;
  if (!from || !to) return showError("Pick both days of the custom range.");
  if (from > to) return showError("The range's first day is after its last day.");
  navigate({ range: "custom", from, to });
});
byId("org-switcher")?.addEventListener("change", (event) => {
  // The period carries over; the filters name another org's teams and users.
  const params = new URLSearchParams({ org: event.target.value, range: state.range });
  if (state.range === "custom") Object.entries({ from: state.from, to: state.to }).forEach(([k, v]) => params.set(k, v));
  window.location.assign(`/?${params}`);
});
window.addEventListener("popstate", () => {
  const params = new URLSearchParams(location.search);
  for (const name of FILTERS) state[name] = params.get(name) || "";
  state.range ||= "7d";
  load();
});

renderFilters();
connect();
// No socket (blocked, or the server has no channel layer): load all the same.
setTimeout(() => { if (loadSeq === 0) load(); }, SOCKET_WAIT_MS);
