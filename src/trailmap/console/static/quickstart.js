// The Quick start page's "waiting for your first event" line: asks this server every few
// seconds whether the organization has an event, and says so once it has (docs/console.md).
(function () {
  var status = document.getElementById("first-event");
  if (!status || status.getAttribute("data-received") === "yes") return;
  var url = status.getAttribute("data-poll");
  var every = Number(status.getAttribute("data-every-ms")) || 3000;
  function ask() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (answer) { return answer.ok ? answer.json() : null; })
      .then(function (body) {
        if (body && body.success && body.data.received) {
          var latest = body.data.latest;
          status.textContent = "Received: " + latest.type + " from " + latest.source +
            " (" + latest.time_relative + ").";
          status.setAttribute("data-received", "yes");
        } else {
          setTimeout(ask, every);
        }
      })
      .catch(function () { setTimeout(ask, every); });
  }
  setTimeout(ask, every);
})();
