// Wait page: count down, poll the verification's state with backoff, reload when the stage shown
// (pending, connecting, online, ended, expired, failed) changes.
// Without JavaScript the page refreshes itself (<noscript> meta refresh) and the copy button stays hidden.
(function () {
  "use strict";
  // Online behind a MikroTik hotspot: log this device in at its router (the form is the page's).
  var routerLogin = document.getElementById("router-login");
  if (routerLogin) { routerLogin.submit(); return; }
  var box = document.getElementById("status");
  if (!box) return;
  var pollUrl = box.getAttribute("data-poll");
  var stage = box.getAttribute("data-stage");
  var left = parseInt(box.getAttribute("data-expires-in"), 10) || 0;
  var shown = document.getElementById("countdown");
  var delay = 1500, timer = null;

  function show() {
    if (shown) shown.textContent = Math.floor(left / 60) + ":" + ("0" + (left % 60)).slice(-2);
  }
  setInterval(function () {
    if (left > 0) { left -= 1; show(); if (left === 0) pollNow(); }
  }, 1000);

  function schedule(ms) { clearTimeout(timer); timer = setTimeout(poll, ms); }
  function pollNow() { delay = stage === "connecting" ? 500 : 1500; schedule(0); }
  function poll() {
    fetch(pollUrl, {cache: "no-store", credentials: "same-origin"})
      .then(function (r) { return r.json(); })
      .then(function (data) {
        var now = data.state === "confirmed" ? data.access : data.state;
        if (now && now !== stage) { location.reload(); return; }
        if (typeof data.expires_in === "number") { left = data.expires_in; show(); }
        delay = Math.min(delay * 1.3, stage === "connecting" ? 3000 : 8000);
        schedule(delay);
      })
      .catch(function () { delay = Math.min(delay * 2, 15000); schedule(delay); });
  }
  if (stage === "connecting") delay = 500;
  schedule(delay);
  // Back from the dialer: look at once.
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") pollNow();
  });

  var copy = document.getElementById("copy");
  var done = document.getElementById("copy-done");
  if (copy) {
    copy.hidden = false;
    copy.addEventListener("click", function () {
      var number = copy.getAttribute("data-number");
      function ok() { if (done) done.textContent = copy.getAttribute("data-done"); }
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(number).then(ok, function () { legacyCopy(number) && ok(); });
      } else if (legacyCopy(number)) {
        ok();
      }
    });
  }
  // The portal is usually plain HTTP, where navigator.clipboard does not exist.
  function legacyCopy(text) {
    var field = document.createElement("textarea");
    field.value = text;
    field.setAttribute("readonly", "");
    field.style.position = "fixed";
    field.style.opacity = "0";
    document.body.appendChild(field);
    field.select();
    var copied = false;
    try { copied = document.execCommand("copy"); } catch (e) { copied = false; }
    document.body.removeChild(field);
    return copied;
  }
})();
