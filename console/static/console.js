// fleetwire console: the only script. Elements with data-live="URL" follow that URL's
// server-sent events: each "overview" event carries the element's new HTML, rendered
// (and escaped) by the console; "expired" means the session ended. Without JavaScript the
// pages still work, they just do not refresh by themselves.
"use strict";

for (const element of document.querySelectorAll("[data-live]")) {
  const source = new EventSource(element.dataset.live);
  const status = document.getElementById("live-status");
  source.addEventListener("overview", (event) => {
    element.innerHTML = event.data;
    element.dataset.updates = String(Number(element.dataset.updates || "0") + 1);
    if (status) {
      status.textContent = "live";
      status.className = "live";
    }
  });
  source.addEventListener("expired", () => {
    source.close();
    window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
  });
  source.addEventListener("error", () => {
    if (status) {
      status.textContent = "reconnecting…";
      status.className = "stale";
    }
  });
}
