// Shared by every page: the run selector opens the chosen run.
"use strict";
document.querySelectorAll("select.autosubmit").forEach(function (select) {
  select.addEventListener("change", function () { select.form.submit(); });
});
