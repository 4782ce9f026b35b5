// Server form: confirm before deleting (CSP forbids inline handlers).
const del = document.getElementById("delete-form");
if (del) {
  del.addEventListener("submit", (ev) => {
    if (!window.confirm(del.dataset.confirm)) ev.preventDefault();
  });
}
