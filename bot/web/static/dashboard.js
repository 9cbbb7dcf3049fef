// Livedesk dashboard: the live post stream and a confirmation before removing a blog.
// No framework and no build step; the page works without this file, only less live.
"use strict";

(function () {
  const POLL_MS = 3000;

  function confirmDangerousForms() {
    document.querySelectorAll("button[data-confirm]").forEach(function (button) {
      button.addEventListener("click", function (event) {
        if (!window.confirm(button.dataset.confirm)) {
          event.preventDefault();
        }
      });
    });
  }

  function liveStream() {
    const list = document.getElementById("stream");
    if (!list) {
      return;
    }
    const status = document.getElementById("stream-status");
    let newest = Number(list.dataset.newest || "0");
    let failures = 0;

    function say(state, text) {
      status.dataset.state = state;
      status.textContent = text;
    }

    async function poll() {
      let response;
      try {
        response = await fetch(list.dataset.source + "?after=" + newest, {
          credentials: "same-origin",
          headers: { Accept: "text/html" },
        });
      } catch (error) {
        failures += 1;
        say("offline", "The server does not answer; trying again…");
        return schedule();
      }
      if (response.status === 401) {
        say("signed-out", "Your session has ended: reload the page to sign in again.");
        return; // stop polling until the operator signs in again
      }
      if (!response.ok) {
        failures += 1;
        say("offline", "The server answered " + response.status + "; trying again…");
        return schedule();
      }
      failures = 0;
      const html = await response.text();
      const reported = Number(response.headers.get("X-Newest") || newest);
      if (html.trim()) {
        const template = document.createElement("template");
        template.innerHTML = html; // server-rendered with every text escaped
        const empty = document.getElementById("stream-empty");
        if (empty) {
          empty.remove();
        }
        list.prepend(template.content);
        while (list.children.length > 200) {
          list.lastElementChild.remove();
        }
      }
      newest = Math.max(newest, reported);
      list.dataset.newest = String(newest);
      say("live", "Live: new posts appear here as they are imported, by this process or any other.");
      schedule();
    }

    function schedule() {
      const wait = Math.min(POLL_MS * Math.pow(2, failures), 60000);
      window.setTimeout(poll, wait);
    }

    schedule();
  }

  document.addEventListener("DOMContentLoaded", function () {
    confirmDangerousForms();
    liveStream();
  });
})();
