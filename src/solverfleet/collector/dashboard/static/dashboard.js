// solverfleet dashboard: re-read live tables, confirm dangerous forms. No inline script
// anywhere (the Content-Security-Policy forbids it); this file is all the JavaScript there is.
"use strict";

(function () {
  // Forms with data-confirm ask first. Delegated, so forms swapped in by a refresh work too.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  var seconds = Number(document.body.getAttribute("data-refresh"));
  if (!seconds) {
    return;
  }
  var toggle = document.getElementById("auto-refresh");
  var busy = false;

  function swap(fresh) {
    document.querySelectorAll("[data-live][id]").forEach(function (old) {
      var update = fresh.getElementById(old.id);
      if (update) {
        old.replaceWith(document.importNode(update, true));
      }
    });
  }

  function reread() {
    if (busy || document.hidden || (toggle && !toggle.checked)) {
      return;
    }
    busy = true;
    // The header tells the server this is a re-read: it leaves out the charts (their window
    // is hours or days; a fresh page draws them) and so skips their queries.
    fetch(window.location.href, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { "X-Dashboard-Refresh": "1" },
    })
      .then(function (response) {
        // A redirect means the session ended (logout elsewhere, token revoked): show the login.
        if (response.redirected) {
          window.location.assign(response.url);
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (text) {
        if (text) {
          swap(new DOMParser().parseFromString(text, "text/html"));
        }
      })
      .catch(function () {
        // Collector unreachable for a moment: keep what is shown, try again next round.
      })
      .finally(function () {
        busy = false;
      });
  }

  window.setInterval(reread, seconds * 1000);
})();
