// ferry ui: live updates. Pages say what they watch in data attributes; the server sends
// `changed` over server-sent events and the page fetches its fragment again. Log lines are
// appended as text, never parsed as HTML.
(function () {
  "use strict";
  const body = document.body;

  function watch(events, fragment, target) {
    const source = new EventSource(events);
    async function refresh() {
      const response = await fetch(fragment, { credentials: "same-origin" });
      if (response.ok) {
        document.getElementById(target).innerHTML = await response.text();
        bindConfirms();
      }
    }
    // `ready`: the server has looked; what changed since this page was rendered shows now.
    source.addEventListener("ready", refresh);
    source.addEventListener("changed", refresh);
  }

  function bindConfirms() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      if (form.dataset.bound) return;
      form.dataset.bound = "1";
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
  }

  bindConfirms();
  if (body.dataset.live === "runs") {
    watch("/events/runs" + location.search, "/fragment/runs" + location.search, "runs");
  }
  if (body.dataset.live === "run") {
    const run = body.dataset.run;
    watch("/events/runs/" + run, "/fragment/runs/" + run, "run-body");
  }
  if (body.dataset.live === "log") {
    const log = document.getElementById("log");
    const source = new EventSource("/events/runs/" + body.dataset.run + "/steps/" + body.dataset.step);
    source.addEventListener("line", function (event) {
      log.appendChild(document.createTextNode(event.data + "\n"));
      log.dataset.lines = String(Number(log.dataset.lines || "0") + 1);
    });
    source.addEventListener("end", function () {
      source.close();
      log.dataset.ended = "1";
    });
  }
})();
