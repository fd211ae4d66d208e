// Refreshes the console's live part (#live) every second from
// /admin/live, without reloading the page: the forms keep what was typed.
// A refresh still in flight is never doubled, so a slow server gets at
// most one request at a time from each open page.
(function () {
  "use strict";
  var state = document.getElementById("refresh-state");
  if (!document.getElementById("live")) {
    return;
  }
  var busy = false;
  function say(text, ok) {
    if (state) {
      state.textContent = text;
      state.className = ok ? "refresh" : "refresh off";
    }
  }
  function refresh() {
    if (busy) {
      return;
    }
    var cur = document.getElementById("live");
    busy = true;
    fetch("/admin/live?v=" + encodeURIComponent(cur.dataset.pageVersion), {
      credentials: "same-origin",
      cache: "no-store",
    }).then(function (r) {
      if (r.status === 401) {
        window.location.assign("/admin/login");
        return null;
      }
      if (!r.ok) {
        throw new Error("HTTP " + r.status);
      }
      return r.text();
    }).then(function (html) {
      if (html === null) {
        return;
      }
      var holder = document.createElement("div");
      holder.innerHTML = html;
      var next = holder.querySelector("#live");
      if (next) {
        document.getElementById("live").replaceWith(next);
      }
      say("live · " + new Date().toLocaleTimeString(), true);
    }).catch(function (err) {
      say("not updating: " + err.message, false);
    }).finally(function () {
      busy = false;
    });
  }
  say("live", true);
  window.setInterval(refresh, 1000);
})();
