// The spawn-pending page: follows the server's progress over Server-Sent Events and
// opens the server when it is ready. No framework, no build step.
(function () {
  "use strict";
  const root = document.getElementById("pending");
  if (!root) return;
  const bar = document.getElementById("bar");
  const status = document.getElementById("status");
  const log = document.getElementById("log");
  const events = new EventSource(root.dataset.progressUrl);
  // Where to go when the server is ready: the hub put it in the page. A URL in the stream is
  // followed only when it stays on this origin under /user/, so no stream can send the
  // browser elsewhere.
  function destination(url) {
    const fallback = root.dataset.serverUrl || "/hub/home";
    if (!url) return fallback;
    let parsed;
    try {
      parsed = new URL(url, window.location.origin);
    } catch (e) {
      return fallback;
    }
    if (parsed.origin !== window.location.origin || !parsed.pathname.startsWith("/user/")) {
      return fallback;
    }
    return parsed.pathname + parsed.search + parsed.hash;
  }
  function finish(message) {
    events.close();
    const cancel = document.getElementById("cancel");
    if (cancel) cancel.hidden = true;
    document.getElementById("failure").hidden = false;
    document.getElementById("failure-message").textContent = message;
  }
  events.onmessage = function (message) {
    const event = JSON.parse(message.data);
    if (typeof event.progress === "number") {
      bar.value = event.progress;
      bar.textContent = event.progress + "%";
    }
    if (event.message) {
      status.textContent = event.message;
      // A pull sends an update per layer step: keep one log line for it, not hundreds.
      const last = log.lastElementChild;
      if (event.phase === "pulling" && last && last.dataset.phase === "pulling") {
        last.textContent = event.message;
      } else {
        const item = document.createElement("li");
        item.textContent = event.message;
        item.dataset.phase = event.phase || "";
        log.appendChild(item);
      }
    }
    if (event.ready) {
      events.close();
      window.location.assign(root.dataset.serverUrl || destination(event.url));
    } else if (event.failed) {
      finish(event.message + (event.exit_code != null ? " (exit code " + event.exit_code + ")" : ""));
      document.getElementById("failure-log").textContent = (event.last_log_lines || []).join("\n");
    } else if (event.stopped) {
      finish(event.message || "The server was stopped");
    }
  };
  events.onerror = function () {
    status.textContent = "Lost the connection to gantry; retrying…";
  };
})();
