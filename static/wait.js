// Wait page: count down and poll the verification's state; reload when it changes.
(function () {
  var box = document.getElementById("status");
  if (!box) return;
  var token = box.getAttribute("data-token");
  var left = parseInt(box.getAttribute("data-expires-in"), 10) || 0;
  var shown = document.getElementById("countdown");
  var delay = 1500;
  setInterval(function () {
    left = Math.max(0, left - 1);
    if (shown) shown.textContent = Math.floor(left / 60) + ":" + ("0" + (left % 60)).slice(-2);
  }, 1000);
  function poll() {
    fetch("/api/verifications/" + encodeURIComponent(token), {cache: "no-store"})
      .then(function (r) { return r.json(); })
      .then(function (data) {
        if (data.state && data.state !== "pending") { location.reload(); return; }
        if (typeof data.expires_in === "number") left = data.expires_in;
        delay = Math.min(delay * 1.3, 8000);
        setTimeout(poll, delay);
      })
      .catch(function () { delay = Math.min(delay * 2, 15000); setTimeout(poll, delay); });
  }
  setTimeout(poll, delay);
})();
