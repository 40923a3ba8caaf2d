// Forecast lines of the budgets panel: what each budget is projected to count
// when its window ends and when it runs out (GET /v1/budgets' projected_usd,
// runs_out_at), and, under the panel, the inputs the forecasts were made
// from (docs/forecasts.md). Text only; dashboard.js puts it on the page.

const HOURS_FORMAT = new Intl.NumberFormat("en-US");

function localTime(iso, timeZone) {
  return new Date(iso).toLocaleString("en-US", {
    timeZone, month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
  });
}

// One budget's line, or null before its first forecast. `money` formats a
// decimal string as dollars; `timeZone` is the org's.
export function forecastLine(budget, money, timeZone) {
  if (!budget.forecast) return null;
  const parts = [];
  if (budget.projected_usd !== null) parts.push(`projected ${money(budget.projected_usd)} at reset`);
  const used = Number(budget.spent_usd) + Number(budget.reserved_usd);
  if (budget.runs_out_at === null) {
    parts.push(budget.period === "total" ? "not expected to run out" : "not expected to run out before reset");
  } else if (Date.parse(budget.runs_out_at) - Date.now() < 60000 && used >= Number(budget.limit_usd)) {
    parts.push("out now");
  } else {
    parts.push(`runs out ${localTime(budget.runs_out_at, timeZone)}`);
  }
  return parts.join(" · ");
}

// The forecasts' inputs, from the first budget that has one (they share
// the org's history), or why there are none.
export function forecastBasis(budgets) {
  const forecast = budgets.map((b) => b.forecast).find((f) => f);
  if (!forecast) {
    return budgets.length
      ? "No forecasts yet: they need an hour of rolled-up history and the worker (run_worker)."
      : "";
  }
  const history = `${HOURS_FORMAT.format(forecast.history_hours)} hours of history`;
  if (forecast.basis === "hour_of_week") {
    const weeks = forecast.weeks === 1 ? "week's" : `${forecast.weeks} weeks'`;
    return `Forecasts: spend so far plus the last ${weeks} hour-of-week profile for the hours left (${history}).`;
  }
  return `Forecasts: spend so far plus the recent hourly rate for the hours left (${history}; a weekly profile after 168).`;
}
