// Live updates of the console: every second the sections are fetched again (rendered by the
// server) and swapped in, except rows whose recording is playing; Retry buttons post
// without leaving the page. Without this script the page still works (reload, forms).
"use strict";
(function () {
  const live = document.getElementById("live");
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      const d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) { t.title = t.textContent; t.textContent = d.toLocaleString(); }
    });
  }
  function playing() {
    const rows = {};
    live.querySelectorAll("#calls tr[data-id]").forEach(function (tr) {
      const a = tr.querySelector("audio");
      if (a && !a.paused) { rows[tr.dataset.id] = tr; }
    });
    return rows;
  }
  function swap(html) {
    const keep = playing();
    const focused = document.activeElement && document.activeElement.closest("form.filter");
    const next = document.createElement("div");
    next.innerHTML = html;
    localTimes(next);
    next.querySelectorAll("#calls tr[data-id]").forEach(function (tr) {
      const old = keep[tr.dataset.id];
      if (old) { tr.replaceWith(old); }
    });
    if (focused) {
      const form = next.querySelector("form.filter");
      if (form) { form.replaceWith(focused); }
    }
    live.replaceChildren.apply(live, Array.from(next.childNodes));
  }
  let busy = false;
  async function refresh() {
    if (busy) { return; }
    busy = true;
    try {
      const r = await fetch("/console/sections" + location.search, { credentials: "same-origin" });
      if (r.ok) { swap(await r.text()); }
    } catch (e) {
      // The service restarted or the network dropped: the next tick tries again.
    } finally {
      busy = false;
    }
  }
  live.addEventListener("submit", async function (ev) {
    const form = ev.target;
    if (form.method.toLowerCase() !== "post") { return; }
    ev.preventDefault();
    const button = form.querySelector("button");
    if (button) { button.disabled = true; }
    try {
      await fetch(form.action, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Accept": "application/json" },
        body: new URLSearchParams(new FormData(form)),
      });
    } finally {
      await refresh();
    }
  });
  localTimes(document);
  setInterval(refresh, 1000);
})();
