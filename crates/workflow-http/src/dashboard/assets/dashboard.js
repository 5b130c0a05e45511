// The workflow runs dashboard: refreshes the page while what it shows can
// change, and drives the action buttons. Plain JS, no dependencies.
//
// The pages are rendered on the server. `#content` carries `data-poll` (a JSON
// URL) and `data-fingerprint` when the page should refresh itself: every
// POLL_MS the script fetches that URL and, when its `fingerprint` differs,
// fetches the page again and swaps `#content` (the server's HTML, already
// escaped). A run page without `data-poll` (the run has ended) stops polling.
// `data-grow` (milliseconds) asks for the page again that often even when
// nothing changed: the open bars of a live run's waterfall grow with the
// clock, and the engine overview's figures move.
//
// It also shows the details of the waterfall row under the pointer or the
// keyboard focus in `#wf-detail`, and copies `workflow` commands.
(function () {
  "use strict";

  var POLL_MS = 1500;
  var TOKEN_KEY = "workflow-dashboard-token";
  var timer = null;
  var loadedAt = Date.now();

  function content() {
    return document.getElementById("content");
  }

  function schedule() {
    if (timer !== null) {
      clearTimeout(timer);
    }
    var c = content();
    timer = c && (c.dataset.poll || c.dataset.grow) ? setTimeout(poll, POLL_MS) : null;
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
          // Keep the keyboard focus on the element with the same id.
          var focused = document.activeElement && document.activeElement.id;
          c.replaceWith(document.importNode(fresh, true));
          document.title = doc.title;
          loadedAt = Date.now();
          if (focused) {
            var again = document.getElementById(focused);
            if (again && again.focus) {
              again.focus();
              showDetail(again);
            }
          }
        }
      });
  }

  function poll() {
    timer = null;
    var c = content();
    if (!c || !(c.dataset.poll || c.dataset.grow)) {
      return;
    }
    if (document.hidden) {
      schedule();
      return;
    }
    var grow = Number(c.dataset.grow || 0);
    if (grow > 0 && Date.now() - loadedAt >= grow) {
      reload()
        .catch(function () {
          /* try again later */
        })
        .then(schedule);
      return;
    }
    if (!c.dataset.poll) {
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

  function showDetail(row) {
    var line = document.getElementById("wf-detail");
    var label = row && row.getAttribute("aria-label");
    if (line && label) {
      line.textContent = label;
    }
  }

  function rowOf(target) {
    return target && target.closest ? target.closest(".wf-op") : null;
  }

  document.addEventListener("focusin", function (ev) {
    var row = rowOf(ev.target);
    if (row) {
      showDetail(row);
    }
  });

  document.addEventListener("mouseover", function (ev) {
    var row = rowOf(ev.target);
    if (row) {
      showDetail(row);
    }
  });

  function copy(button) {
    var text = button.dataset.copy;
    var done = function () {
      button.textContent = "Copied";
      setTimeout(function () {
        button.textContent = "Copy";
      }, 1500);
    };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(done, function () {
        select(button);
      });
    } else {
      select(button);
    }
  }

  // Without clipboard access, select the command so that it can be copied.
  function select(button) {
    var code = button.parentNode && button.parentNode.querySelector("code");
    if (code && window.getSelection) {
      var range = document.createRange();
      range.selectNodeContents(code);
      var sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
    }
  }

  document.addEventListener("click", function (ev) {
    var target = ev.target;
    var copyButton = target && target.closest ? target.closest("button[data-copy]") : null;
    if (copyButton) {
      ev.preventDefault();
      copy(copyButton);
      return;
    }
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
