// The lab dashboard's script: times in the browser's zone, live updates from /ui/events,
// forms sent with fetch(), and the timeline's booking and details dialogs. Hand-written,
// no dependencies; every page works without it (forms post and redirect).
"use strict";

(function () {
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";
  // The server renders times in this zone once it knows it (the cookie), UTC before.
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  if (!document.cookie.split("; ").includes("orch_tz=" + zone)) {
    document.cookie = "orch_tz=" + zone + "; path=/ui; max-age=31536000; samesite=strict";
  }

  // --- times ------------------------------------------------------------------------
  const formats = {
    datetime: { weekday: "short", day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit" },
    time: { hour: "2-digit", minute: "2-digit" },
    date: { weekday: "short", day: "2-digit", month: "short" },
  };

  function ago(seconds) {
    if (seconds < 0) seconds = 0;
    if (seconds < 90) return Math.round(seconds) + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    if (seconds < 172800) return Math.round(seconds / 3600) + " h ago";
    return Math.round(seconds / 86400) + " days ago";
  }

  function formatTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (element) {
      const moment = new Date(element.getAttribute("datetime"));
      if (isNaN(moment)) return;
      const style = element.dataset.style || "datetime";
      if (style === "ago") {
        element.textContent = ago((Date.now() - moment.getTime()) / 1000);
      } else {
        element.textContent = moment.toLocaleString(undefined, formats[style] || formats.datetime);
      }
      element.title = "UTC: " + moment.toISOString().replace("T", " ").slice(0, 19);
    });
  }

  function tickAges() {
    document.querySelectorAll('time[data-style="ago"]').forEach(function (element) {
      const moment = new Date(element.getAttribute("datetime"));
      element.textContent = ago((Date.now() - moment.getTime()) / 1000);
    });
    const timeline = document.getElementById("timeline");
    if (timeline) {
      const start = Date.parse(timeline.dataset.start), end = Date.parse(timeline.dataset.end);
      const left = (100 * (Date.now() - start)) / (end - start);
      timeline.querySelectorAll(".now-line").forEach(function (line) {
        line.style.left = left.toFixed(3) + "%";
      });
    }
  }

  // --- messages ------------------------------------------------------------------------
  let toastTimer = null;
  function toast(text) {
    const element = document.getElementById("toast");
    if (!element) return;
    element.textContent = text;
    element.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { element.hidden = true; }, 5000);
  }

  function problemText(problem) {
    let text = problem.detail || problem.title || "the request failed";
    if (Array.isArray(problem.conflicts) && problem.conflicts.length) {
      text += " — in the way: " + problem.conflicts.map(function (c) {
        const from = new Date(c.start).toLocaleString(undefined, formats.datetime);
        const to = new Date(c.end).toLocaleString(undefined, formats.time);
        return (c.user_id ? c.user_id + " " : "") + from + "–" + to;
      }).join(", ");
    }
    return text;
  }

  // --- fragments: parts of a page that refresh themselves ------------------------------
  const pending = new Map();

  async function refresh(element) {
    const url = element.dataset.refresh;
    if (!url) return;
    let response;
    try {
      response = await fetch(url, { headers: { Accept: "text/html", "X-Requested-With": "fetch" } });
    } catch (error) {
      return;
    }
    if (response.status === 401) { window.location.reload(); return; }
    if (!response.ok) return;
    const html = await response.text();
    const holder = document.createElement("div");
    holder.innerHTML = html.trim();
    const fresh = holder.firstElementChild;
    if (!fresh || !element.isConnected) return;
    // Not under the user's hands: a fragment whose field has the focus waits a little.
    const focused = document.activeElement;
    if (element.contains(focused) && focused.matches("input, select, textarea")) {
      setTimeout(function () { schedule(element); }, 2000);
      return;
    }
    // A form marked data-keep (what the user typed, and what it answered) stays as it is.
    element.querySelectorAll("[data-keep][id]").forEach(function (kept) {
      const twin = fresh.querySelector("#" + CSS.escape(kept.id));
      if (twin) twin.replaceWith(kept);
    });
    element.replaceWith(fresh);
    formatTimes(fresh);
    fresh.dispatchEvent(new CustomEvent("refreshed", { bubbles: true }));
  }

  function schedule(element) {
    if (pending.has(element)) return;
    const wait = parseInt(element.dataset.debounce || "250", 10);
    pending.set(element, setTimeout(function () {
      pending.delete(element);
      refresh(element);
    }, wait));
  }

  function globMatches(pattern, type) {
    if (pattern === "*") return true;
    if (pattern.endsWith(".*")) return type.startsWith(pattern.slice(0, -1));
    return pattern === type;
  }

  function reservationUrl(id) {
    return "/ui/reservations/" + encodeURIComponent(id);
  }

  // Whether the element shows this reservation: a bar or a link of it, or its id listed.
  function shows(element, id) {
    if (!id) return false;
    if ((element.dataset.reservations || "").split(/\s+/).includes(id)) return true;
    return !!element.querySelector('a[href="' + CSS.escape(reservationUrl(id)) + '"]');
  }

  function concerns(element, event) {
    const patterns = (element.dataset.on || "").split(/\s+/).filter(Boolean);
    if (!patterns.some(function (p) { return globMatches(p, event.type); })) return false;
    const bench = element.dataset.bench;
    if (bench && event.bench_id !== bench) {
      // A reservation that left this bench (swapped, moved) concerns it as well.
      const data = event.data || {};
      const reservation = event.entity && event.entity.type === "reservation" ? event.entity.id : null;
      if (data.from_bench_id !== bench && !shows(element, reservation)) return false;
    }
    const match = element.dataset.match;
    if (match) {
      const data = event.data || {};
      const ids = [event.entity && event.entity.id, data.execution_id, data.reservation_id];
      if (!ids.includes(match)) return false;
    }
    return true;
  }

  function apply(event) {
    document.querySelectorAll("[data-refresh]").forEach(function (element) {
      // A fragment inside another that refreshes anyway is left to its container.
      const outer = element.parentElement && element.parentElement.closest("[data-refresh]");
      if (outer && concerns(outer, event)) return;
      if (concerns(element, event)) schedule(element);
    });
  }

  // --- the live stream -----------------------------------------------------------------
  let stream = null;
  let lastMessage = 0;

  function setLive(state, text) {
    const element = document.getElementById("live");
    if (!element) return;
    element.dataset.state = state;
    element.textContent = text;
  }

  function connect() {
    const wanted = (document.body.dataset.live || "").split(/\s+/).filter(Boolean);
    if (!wanted.length || !window.EventSource) return;
    const query = wanted.map(function (type) { return "type=" + encodeURIComponent(type); }).join("&");
    stream = new EventSource("/ui/events?" + query);
    stream.onopen = function () { setLive("on", "● live"); lastMessage = Date.now(); };
    stream.onerror = function () {
      setLive("off", stream.readyState === EventSource.CLOSED ? "○ not live (reload)" : "◌ reconnecting");
    };
    // Every event arrives as a named SSE event (its type): listen on every type there is
    // (the page lists them, from the service's own list).
    const names = (document.body.dataset.eventTypes || "").split(/\s+/).filter(Boolean);
    const seen = function (message) {
      lastMessage = Date.now();
      let event;
      try { event = JSON.parse(message.data); } catch (error) { return; }
      apply(event);
    };
    names.forEach(function (name) { stream.addEventListener(name, seen); });
    stream.onmessage = seen;
  }

  // The fallback: with no stream, every fragment is refreshed once a minute.
  setInterval(function () {
    if (stream && stream.readyState === EventSource.OPEN) return;
    document.querySelectorAll("[data-refresh]").forEach(function (element) {
      if (!(element.parentElement && element.parentElement.closest("[data-refresh]"))) refresh(element);
    });
  }, 60000);

  // --- forms ---------------------------------------------------------------------------
  function localToIso(value) {
    // A datetime-local value is the browser's local time: send it with its offset (UTC).
    const moment = new Date(value);
    return isNaN(moment) ? value : moment.toISOString();
  }

  function toLocalInput(moment) {
    const pad = function (n) { return String(n).padStart(2, "0"); };
    return moment.getFullYear() + "-" + pad(moment.getMonth() + 1) + "-" + pad(moment.getDate()) +
      "T" + pad(moment.getHours()) + ":" + pad(moment.getMinutes());
  }

  async function submit(form, submitter) {
    const body = new URLSearchParams(new FormData(form));
    // The button pressed says what to do (a dry run, or the real thing).
    if (submitter && submitter.name) body.set(submitter.name, submitter.value);
    form.querySelectorAll('input[type="datetime-local"]').forEach(function (input) {
      body.set(input.name, localToIso(input.value));
    });
    if (body.has("tz")) body.set("tz", zone);
    const error = form.querySelector(".form-error") || (form.parentElement && form.parentElement.querySelector(".form-error"));
    if (error) { error.hidden = true; error.textContent = ""; }
    const buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    let response, answer = {};
    try {
      response = await fetch(form.action, {
        method: "POST",
        body: body,
        headers: { Accept: "application/json", "X-CSRF-Token": csrf },
      });
      answer = await response.json().catch(function () { return {}; });
    } catch (failure) {
      answer = { detail: "the service did not answer: " + failure };
    } finally {
      buttons.forEach(function (b) { b.disabled = false; });
    }
    if (response && response.status === 401) { window.location.reload(); return; }
    if (!response || !response.ok) {
      const text = problemText(answer);
      if (error) { error.textContent = text; error.hidden = false; } else { toast(text); }
      return;
    }
    toast(answer.message || "done");
    const result = form.querySelector(".form-result");
    if (result && typeof answer.plan_html === "string") {
      result.innerHTML = answer.plan_html;
      formatTimes(result);
    }
    if (answer.dry_run) return;  // nothing changed
    const dialog = form.closest("dialog");
    const reservation = answer.reservation;
    if (form.hasAttribute("data-book-form")) {
      dialog && dialog.close();
    }
    // What the change touched refreshes now, without waiting for its event: the bench
    // it is on, and whatever showed it (a bar on the bench it left).
    const affected = [];
    if (reservation) {
      document.querySelectorAll('[data-bench="' + CSS.escape(reservation.bench_id) + '"][data-refresh]').forEach(function (e) { affected.push(e); });
      document.querySelectorAll('[data-match="' + CSS.escape(reservation.reservation_id) + '"][data-refresh]').forEach(function (e) { affected.push(e); });
      document.querySelectorAll("[data-bench][data-refresh]").forEach(function (e) {
        if (shows(e, reservation.reservation_id)) affected.push(e);
      });
    }
    if (answer.bench_id) {
      document.querySelectorAll('[data-bench="' + CSS.escape(answer.bench_id) + '"][data-refresh]').forEach(function (e) { affected.push(e); });
    }
    const container = form.closest("[data-refresh]");
    if (container) affected.push(container);
    document.querySelectorAll("#mine[data-refresh]").forEach(function (e) { affected.push(e); });
    Array.from(new Set(affected)).forEach(refresh);
  }

  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    if (form.hasAttribute("data-ajax")) {
      const submitter = event.submitter || null;
      const question = (submitter && submitter.dataset.confirm) || form.dataset.confirm;
      event.preventDefault();
      if (question && !window.confirm(question)) return;
      submit(form, submitter);
    }
  });

  // --- the timeline --------------------------------------------------------------------
  function openBooking(benchId, start) {
    const dialog = document.getElementById("book-dialog");
    if (!dialog) return false;
    const form = dialog.querySelector("form");
    form.bench_id.value = benchId;
    const end = new Date(start.getTime() + 3600 * 1000);
    form.start.value = toLocalInput(start);
    form.end.value = toLocalInput(end);
    const error = form.querySelector(".form-error");
    error.hidden = true;
    dialog.showModal();
    form.purpose.focus();
    return true;
  }

  async function openDetails(reservationId) {
    const dialog = document.getElementById("details-dialog");
    if (!dialog) return false;
    const content = dialog.querySelector(".dialog-content");
    const response = await fetch("/ui/reservations/" + encodeURIComponent(reservationId) + "?fragment=true", {
      headers: { Accept: "text/html", "X-Requested-With": "fetch" },
    });
    if (response.status === 401) { window.location.reload(); return true; }
    content.innerHTML = await response.text();
    formatTimes(content);
    if (!dialog.open) dialog.showModal();
    return true;
  }

  function slotAt(lane, clientX) {
    const timeline = document.getElementById("timeline");
    const start = Date.parse(timeline.dataset.start), end = Date.parse(timeline.dataset.end);
    const box = lane.getBoundingClientRect();
    const fraction = Math.min(Math.max((clientX - box.left) / box.width, 0), 1);
    const step = (timeline.dataset.view === "week" ? 60 : 30) * 60 * 1000;
    let moment = start + fraction * (end - start);
    moment = Math.floor(moment / step) * step;
    const soonest = Math.ceil(Date.now() / (5 * 60 * 1000)) * 5 * 60 * 1000;
    return new Date(Math.max(moment, soonest));
  }

  document.addEventListener("click", function (event) {
    const target = event.target;
    if (!(target instanceof Element)) return;
    if (target.closest("[data-close]")) {
      const dialog = target.closest("dialog");
      if (dialog) dialog.close();
      return;
    }
    // A bar's reservation id is the last part of its link.
    const bar = target.closest("a.bar[href]");
    if (bar && !event.ctrlKey && !event.metaKey && !event.shiftKey) {
      event.preventDefault();
      openDetails(decodeURIComponent(bar.getAttribute("href").split("/").pop()));
      return;
    }
    const book = target.closest("a[data-book]");
    if (book && document.getElementById("book-dialog")) {
      event.preventDefault();
      openBooking(book.dataset.book, slotAt(book.closest(".t-row").querySelector(".t-lane"), -1e9));
      return;
    }
    const lane = target.closest(".t-lane[data-bookable]");
    if (lane && target === lane) {
      openBooking(lane.dataset.lane, slotAt(lane, event.clientX));
    }
  });

  // The details dialog's own forms refresh the dialog once they are done.
  document.addEventListener("refreshed", function (event) {
    formatTimes(event.target);
  });

  // --- sign-in: the cookie is SameSite=Strict, so a link from elsewhere arrives without
  // it; the page's own request carries it, and a signed-in user goes on at once.
  function resumeSession() {
    const form = document.querySelector(".sign-in[data-next]");
    if (!form) return;
    fetch("/ui/whoami", { headers: { Accept: "application/json" } }).then(function (response) {
      if (response.ok) window.location.replace(form.dataset.next || "/ui");
    }).catch(function () {});
  }

  formatTimes(document);
  setInterval(tickAges, 1000);
  resumeSession();
  connect();
})();
