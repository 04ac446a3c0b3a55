// Live prices on the purchasing pages: asks this console's own /buy/quote as choices change.
// Optional: without it, the "Show price" button computes the same price on the server.
(function () {
  "use strict";
  document.querySelectorAll("form[data-quote]").forEach(function (form) {
    var out = form.querySelector("[data-price]");
    var hints = form.querySelector("[data-hints]");
    var timer = null;
    function update() {
      var params = new URLSearchParams();
      new FormData(form).forEach(function (v, k) { if (k !== "csrf" && k !== "action") params.append(k, v); });
      fetch(form.dataset.quote + "?" + params.toString(), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (q) {
          if (!q) return;
          out.textContent = q.price || out.dataset.none || "—";
          hints.textContent = "";
          (q.hints || []).forEach(function (h) { var li = document.createElement("li"); li.textContent = h; hints.appendChild(li); });
        })
        .catch(function () {});
    }
    form.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(update, 150); });
    form.addEventListener("change", update);
  });
})();
