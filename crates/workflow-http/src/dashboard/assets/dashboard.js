// The workflow runs dashboard: refreshes the page while what it shows can
// change, and drives the action buttons. Plain JS, no dependencies.
//
// The pages are rendered on the server. `#content` carries `data-poll` (a JSON
// URL) and `data-fingerprint` when the page should refresh itself: every
// POLL_MS the script fetches that URL and, when its `fingerprint` differs,
// fetches the page again and swaps `#content` (the server's HTML, already
// escaped). A run page without `data-poll` (the run has ended) stops polling.
(function () {
  "use strict";

  var POLL_MS = 1500;
  var TOKEN_KEY = "workflow-dashboard-token";
  var timer = null;

  function content() {
    return document.getElementById("content");
  }

  function schedule() {
    if (timer !== null) {
      clearTimeout(timer);
    }
    var c = content();
    timer = c && c.dataset.poll ? setTimeout(poll, POLL_MS) : null;
  }

  function reload() {
    return fetch(window.location.href, { cache: "no-store", credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) {
          throw new Error("HTTP " + r.status);
        }
        return r.text();
      })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("content");
        var c = content();
        if (fresh && c) {
          c.replaceWith(document.importNode(fresh, true));
          document.title = doc.title;
        }
      });
  }

  function poll() {
    timer = null;
    var c = content();
    if (!c || !c.dataset.poll) {
      return;
    }
    if (document.hidden) {
      schedule();
      return;
    }
    fetch(c.dataset.poll, {
      cache: "no-store",
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (r) {
        return r.ok ? r.json() : null;
      })
      .then(function (j) {
        var now = content();
        if (j && now && j.fingerprint !== now.dataset.fingerprint) {
          return reload();
        }
        return null;
      })
      .catch(function () {
        /* the server may be restarting: try again later */
      })
      .then(schedule);
  }

  function flash(message) {
    var c = content();
    if (!c) {
      window.alert(message);
      return;
    }
    var p = document.createElement("p");
    p.className = "flash";
    p.textContent = message;
    c.insertBefore(p, c.firstChild);
  }

  function act(button) {
    var action = button.dataset.action;
    var url = button.dataset.url;
    if (!url) {
      return;
    }
    var question =
      action === "cancel"
        ? "Cancel this run? It runs no further."
        : "Make this run due now?";
    if (!window.confirm(question)) {
      return;
    }
    var token = window.sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      token = window.prompt("Bearer token for dashboard actions:");
    }
    if (!token) {
      return;
    }
    button.disabled = true;
    fetch(url, {
      method: "POST",
      cache: "no-store",
      headers: { Authorization: "Bearer " + token, Accept: "application/json" },
    })
      .then(function (r) {
        return r
          .json()
          .catch(function () {
            return {};
          })
          .then(function (j) {
            if (r.status === 401) {
              window.sessionStorage.removeItem(TOKEN_KEY);
              throw new Error("The token was refused.");
            }
            if (!r.ok) {
              throw new Error(j.error || "HTTP " + r.status);
            }
            window.sessionStorage.setItem(TOKEN_KEY, token);
            return reload();
          });
      })
      .then(function () {
        flash(action === "cancel" ? "Run cancelled." : "Run woken.");
        schedule();
      })
      .catch(function (e) {
        button.disabled = false;
        flash(String(e.message || e));
      });
  }

  document.addEventListener("click", function (ev) {
    var target = ev.target;
    var button = target && target.closest ? target.closest("button[data-action]") : null;
    if (button) {
      ev.preventDefault();
      act(button);
    }
  });

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      schedule();
    }
  });

  schedule();
})();
