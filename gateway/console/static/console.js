// Small progressive enhancements; every page works without this file.
"use strict";
(function () {
  // Forms that change state ask once before they are sent (data-confirm holds the question).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
  // The audit trail's filter: pressing Escape in a field clears it.
  document.querySelectorAll("form.filters input").forEach(function (input) {
    input.addEventListener("keydown", function (event) {
      if (event.key === "Escape") input.value = "";
    });
  });
})();
