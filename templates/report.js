(function () {
  "use strict";
  // Optional: "expand all / collapse all" for the per-layer panels. Without JS they stay open.
  var bar = document.querySelector(".js-only");
  if (!bar) { return; }
  bar.hidden = false;
  bar.addEventListener("click", function (ev) {
    var mode = ev.target && ev.target.getAttribute("data-details");
    if (!mode) { return; }
    var panels = document.querySelectorAll("main details.panel");
    for (var i = 0; i < panels.length; i++) { panels[i].open = (mode === "open"); }
  });
})();
