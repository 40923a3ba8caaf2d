// The new-budget form: show only the subject input of the scope picked (the
// server ignores the others). Without this script every input is shown.
const scope = document.getElementById("id_scope");
if (scope) {
  const subjects = ["team", "user", "key", "tag"];
  const sync = () => {
    for (const name of subjects) {
      const row = document.querySelector(`.form-row[data-field="${name}"]`);
      if (row) row.hidden = scope.value !== name;
    }
  };
  scope.addEventListener("change", sync);
  sync();
}
