// Edit controls on the dashboard's budget list, for logins that may change
// budgets (dashboard/access.py, Powers). dashboard.js redraws the list on
// every load and live update; each redraw gets its links back here. A
// viewer's page has no #dashboard-powers, so no controls at all.
const data = document.getElementById("dashboard-powers");
const powers = data ? JSON.parse(data.textContent) : null;
const list = document.getElementById("budgets");

function editable(scope, id) {
  return powers.editAll || (scope === "team" && powers.teams.includes(id));
}

function addLinks() {
  for (const row of list.querySelectorAll(".budget[data-budget]:not([data-linked])")) {
    row.dataset.linked = "1";
    const { scope, id, period, model } = row.dataset;
    if (!editable(scope, id)) continue;
    const query = new URLSearchParams({ org: powers.org, scope, subject: id, period });
    if (model) query.set("model", model);
    const link = document.createElement("a");
    link.className = "edit-link";
    link.href = `/dashboard/budgets/edit?${query}`;
    link.textContent = "Edit";
    link.setAttribute("aria-label", `Edit the ${period} budget of ${scope} ${id}`);
    row.querySelector(".budget-head").append(link);
  }
}

if (powers && list) {
  new MutationObserver(addLinks).observe(list, { childList: true });
  addLinks();
}
