/* mfa_guard: the challenge page's wait before another text message, counted down. The refusal
 * (#send-refused) carries one sentence per second left (data-countdown) and what to say when
 * the wait is over (data-ready); the send button (#send-code) is off until then. Without this
 * script the page says the wait as the server counted it, and the button asks again (and is
 * told the new wait).
 */
(function () {
  "use strict";

  function start() {
    var note = document.getElementById("send-refused");
    var button = document.getElementById("send-code");
    if (!note || !button || !note.hasAttribute("data-countdown")) {
      return;
    }
    var texts = JSON.parse(note.getAttribute("data-countdown"));
    var left = texts.length;
    // The refusal is read out once; the seconds going by are not.
    note.setAttribute("aria-live", "off");
    button.disabled = true;
    var timer = setInterval(function () {
      left -= 1;
      if (left > 0) {
        note.textContent = texts[left - 1];
        return;
      }
      clearInterval(timer);
      var ready = document.createElement("p");
      ready.id = note.id;
      ready.className = "notice";
      ready.setAttribute("role", "status");
      note.replaceWith(ready);
      ready.textContent = note.getAttribute("data-ready");
      button.disabled = false;
    }, 1000);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
