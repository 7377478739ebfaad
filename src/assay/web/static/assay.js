// Assay web UI: live regions over server-sent events. An element with data-stream="URL" opens one
// EventSource; each "update" event carries {element id: server-rendered HTML} for the regions that changed.
// No framework, no build step.
(function () {
  "use strict";

  function follow(root) {
    var url = root.getAttribute("data-stream");
    if (!url || !window.EventSource) return;
    var source = new EventSource(url);
    var badge = document.getElementById("live-state");
    source.addEventListener("update", function (ev) {
      var regions = JSON.parse(ev.data);
      Object.keys(regions).forEach(function (id) {
        var el = document.getElementById(id);
        if (!el) return;
        // Keep an open <details> open across an update of its region.
        var open = {};
        el.querySelectorAll("details[id]").forEach(function (d) { if (d.open) open[d.id] = true; });
        el.innerHTML = regions[id];
        Object.keys(open).forEach(function (d) { var n = document.getElementById(d); if (n) n.open = true; });
      });
      if (badge) badge.textContent = "live";
      document.body.setAttribute("data-updates", String(Number(document.body.getAttribute("data-updates") || 0) + 1));
    });
    source.addEventListener("done", function () {
      source.close();
      if (badge) badge.textContent = "finished";
      document.body.setAttribute("data-stream-done", "1");
    });
    source.onerror = function () { if (badge) badge.textContent = "reconnecting"; };
  }

  function confirmForms() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (ev) {
        if (!window.confirm(form.getAttribute("data-confirm"))) ev.preventDefault();
      });
    });
  }

  function jumpToLine() {
    // Editor errors link to their line: select it in the textarea.
    document.querySelectorAll("a[data-line]").forEach(function (a) {
      a.addEventListener("click", function (ev) {
        ev.preventDefault();
        var area = document.getElementById("yaml");
        if (!area) return;
        var line = Number(a.getAttribute("data-line"));
        var lines = area.value.split("\n");
        var start = 0;
        for (var i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
        var end = start + (lines[line - 1] || "").length;
        area.focus();
        area.setSelectionRange(start, end);
        area.scrollTop = Math.max(0, (line - 5) * 19.5);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-stream]").forEach(follow);
    confirmForms();
    jumpToLine();
  });
})();
