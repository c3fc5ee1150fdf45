// Updates the dashboard's sections in place, every data-refresh-seconds, from the server's
// fragment of the same sections. Without this script the read-only page reloads itself
// (<noscript> meta refresh) and the operator page offers links instead.
(function () {
  "use strict";
  var body = document.body;
  var url = body.getAttribute("data-refresh-url");
  var seconds = Number(body.getAttribute("data-refresh-seconds")) || 15;
  if (!url || !window.fetch || !window.DOMParser) {
    return;
  }
  var state = document.getElementById("refresh-state");
  var timer = null;

  function say(text) {
    if (state && state.textContent !== text) {
      state.textContent = text;
    }
  }

  // A section the operator is working in is left alone: replacing it would drop the note
  // being typed or the focus on a button.
  function busy(section) {
    var active = document.activeElement;
    if (active && active !== body && section.contains(active)) {
      return true;
    }
    var fields = section.querySelectorAll("input[type=text], textarea");
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].value !== "") {
        return true;
      }
    }
    return false;
  }

  function keepOpenDetails(current, fresh) {
    var was = current.querySelectorAll("details");
    var now = fresh.querySelectorAll("details");
    for (var i = 0; i < was.length && i < now.length; i++) {
      if (was[i].open) {
        now[i].setAttribute("open", "");
      }
    }
  }

  function swap(doc) {
    var container = document.getElementById("sections");
    var fresh = doc.querySelectorAll("[data-swap]");
    for (var i = 0; i < fresh.length; i++) {
      var next = fresh[i];
      var current = document.getElementById(next.id);
      if (!current) {
        if (container) {
          container.appendChild(document.importNode(next, true));
        }
        continue;
      }
      if (busy(current)) {
        continue;
      }
      keepOpenDetails(current, next);
      if (current.innerHTML !== next.innerHTML) {
        current.replaceWith(document.importNode(next, true));
      }
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, seconds * 1000);
  }

  function refresh() {
    if (document.hidden) {
      schedule();
      return;
    }
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.status === 401) {
          window.location.reload();
          return null;
        }
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        if (html !== null) {
          swap(new DOMParser().parseFromString(html, "text/html"));
          say("");
        }
      })
      .catch(function (error) {
        say("Last refresh failed (" + error.message + "); figures may be old.");
      })
      .then(schedule);
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      refresh();
    }
  });
  body.setAttribute("data-live", "true");
  schedule();
})();
