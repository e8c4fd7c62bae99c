// Live updates for a session page. The page is complete without this file: it only applies
// the server's operations (append a fragment, replace an element, append plain text) as the
// session's events arrive over Server-Sent Events. Fragments are parsed in a <template>, so
// nothing in them runs; the Content Security Policy forbids inline script besides.
"use strict";
(() => {
  const body = document.body;
  const url = body.dataset.events;
  const status = document.getElementById("live-status");
  if (!url || !window.EventSource) return;

  const say = (text) => { if (status) status.textContent = text; };
  const atBottom = () =>
    window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 40;

  const fragment = (html) => {
    const template = document.createElement("template");
    template.innerHTML = html;
    return template.content;
  };

  const apply = (op) => {
    const target = document.getElementById(op.t);
    if (!target) return;
    if (op.a === "text") {
      target.append(op.x);
    } else if (op.a === "append") {
      target.append(fragment(op.h));
    } else if (op.a === "replace") {
      const wasOpen = target.tagName === "DETAILS" && target.open;
      const replacement = fragment(op.h);
      const first = replacement.firstElementChild;
      if (wasOpen && first && first.tagName === "DETAILS") first.open = true;
      target.replaceWith(replacement);
    }
  };

  const source = new EventSource(`${url}?after=${encodeURIComponent(body.dataset.after || "0")}`);
  source.onopen = () => say("Live");
  source.onmessage = (message) => {
    const follow = atBottom();
    for (const op of JSON.parse(message.data)) apply(op);
    if (message.lastEventId) body.dataset.after = message.lastEventId;
    if (follow) window.scrollTo(0, document.documentElement.scrollHeight);
    say("Live");
  };
  source.addEventListener("refused", (message) => {
    source.close();
    say(message.data);
  });
  source.onerror = () => {
    say(source.readyState === EventSource.CLOSED
      ? "Live updates stopped: reload the page."
      : "Reconnecting…");
  };
})();
