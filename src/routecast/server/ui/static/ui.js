// The overview refreshes its live part in place; nothing else on the dashboard needs script.
(function () {
  var live = document.getElementById("live");
  if (!live) return;
  var every = parseFloat(live.dataset.refresh || "2") * 1000;
  var url = "/ui/live" + window.location.search;
  function tick() {
    fetch(url, {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        live.innerHTML = html;
        live.dataset.updated = String(Date.now());
      })
      .catch(function () { /* keep the last view; try again next tick */ })
      .finally(function () { setTimeout(tick, every); });
  }
  setTimeout(tick, every);
})();
