// The Timeline page's two helps (docs/console.md): the time zone select starts at the
// browser's zone, and new events are added to the list without a reload. Rows come from
// this server already escaped; nothing else is fetched.
(function () {
  "use strict";
  var zone = document.getElementById("f-tz");
  if (zone && !zone.dataset.asked) {
    var mine = "";
    try { mine = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (err) { mine = ""; }
    var known = Array.prototype.some.call(zone.options, function (o) { return o.value === mine; });
    if (mine && known && zone.value !== mine) {
      var url = new URL(window.location.href);
      url.searchParams.set("tz", mine);
      window.location.replace(url.toString());
      return;
    }
  }
  var list = document.getElementById("events");
  if (!list || !list.dataset.feed) { return; }
  var feed = list.dataset.feed;
  function byId(id) {
    for (var i = 0; i < list.children.length; i++) {
      if (list.children[i].dataset.id === id) { return list.children[i]; }
    }
    return null;
  }
  function fromHtml(html) {
    var holder = document.createElement("ol");
    holder.innerHTML = html;
    return holder.firstElementChild;
  }
  function merge(rows) {
    var anchor = null;
    rows.forEach(function (row) {
      var fresh = fromHtml(row.html);
      var shown = byId(row.id);
      if (shown) {
        // The same event: refresh its relative time, keep its place.
        shown.querySelector("time").textContent = fresh.querySelector("time").textContent;
        anchor = shown;
        return;
      }
      fresh.classList.add("new");
      if (anchor) { anchor.after(fresh); } else { list.prepend(fresh); }
      anchor = fresh;
    });
    if (rows.length) {
      var hint = document.getElementById("empty-hint");
      if (hint) { hint.hidden = true; }
    }
  }
  function poll() {
    fetch(feed, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (answer) { if (answer && answer.rows) { merge(answer.rows); } })
      .catch(function () { /* offline for a moment: the next poll tries again */ })
      .then(function () { window.setTimeout(poll, Number(list.dataset.every || 10000)); });
  }
  window.setTimeout(poll, Number(list.dataset.every || 10000));
})();
