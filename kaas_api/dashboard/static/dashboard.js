// kaas admin dashboard: confirmations before actions, and a live refresh of pages that ask for it.
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
(function () {
  var seconds = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (!seconds) { return; }
  window.setInterval(function () {
    var active = document.activeElement;
    if (active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA" || active.tagName === "SELECT")) { return; }
    fetch(window.location.href, { credentials: "same-origin" }).then(function (response) {
      if (!response.ok || response.redirected) { return null; }
      return response.text();
    }).then(function (html) {
      if (!html) { return; }
      var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-live]");
      var current = document.querySelector("[data-live]");
      if (fresh && current) { current.replaceWith(fresh); }
    }).catch(function () {});
  }, seconds * 1000);
})();
