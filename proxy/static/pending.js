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
      window.location.assign(event.url || "/hub/home");
    } else if (event.failed) {
      events.close();
      document.getElementById("cancel").hidden = true;
      document.getElementById("failure").hidden = false;
      document.getElementById("failure-message").textContent =
        event.message + (event.exit_code != null ? " (exit code " + event.exit_code + ")" : "");
      document.getElementById("failure-log").textContent = (event.last_log_lines || []).join("\n");
    }
  };
  events.onerror = function () {
    status.textContent = "Lost the connection to gantry; retrying…";
  };
})();
