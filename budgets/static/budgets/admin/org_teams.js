// Budget and API key forms: the team list shows the picked org's teams only
// (each is labelled "<org slug>/<team slug>"; the org list shows slugs).
"use strict";
{
  const narrow = () => {
    const org = document.getElementById("id_org");
    const team = document.getElementById("id_team");
    if (!org || !team) return;
    const prefix = org.selectedIndex > 0 ? `${org.options[org.selectedIndex].text}/` : null;
    for (const option of team.options) {
      if (!option.value) continue; // the empty choice
      const mine = prefix !== null && option.text.startsWith(prefix);
      option.hidden = option.disabled = !mine;
    }
    if (team.selectedOptions[0]?.disabled) team.value = "";
  };
  document.addEventListener("DOMContentLoaded", () => {
    narrow();
    document.getElementById("id_org")?.addEventListener("change", narrow);
  });
}
