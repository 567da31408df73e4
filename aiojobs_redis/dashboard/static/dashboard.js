// The dashboard's live part: polls api/state and redraws the tables the server rendered
// first; sends the buttons' POSTs with the page's CSRF token. No dependencies, no build.
"use strict";

(() => {
  const body = document.body;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const refreshMs = Math.max(500, parseFloat(body.dataset.refresh || "2") * 1000);
  const readOnly = body.dataset.readOnly === "1";
  const pageKind = body.dataset.page || "main"; // only the main page polls; job and queue pages are static
  const MAX_BARS = 120;
  const SVG = "http://www.w3.org/2000/svg";
  let minutes = parseInt(body.dataset.minutes || "60", 10);
  let timer = null;
  const captionTitle =
    "runs in the period shown: succeeded; failed = jobs that failed for good and entered the failed set; " +
    "retried = failed attempts that will run again";

  // -- building blocks (text only ever goes in through textContent) -------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function td(text, cls, title) {
    return el("td", { class: cls, title: title || null }, text);
  }

  function link(path, params) {
    const query = new URLSearchParams(params).toString();
    return query ? `${path}?${query}` : path;
  }

  function jobCell(name, id, queue) {
    const code = el("code", null, id);
    const target = queue ? el("a", { href: link("job", { queue, id }) }, code) : code;
    return el("td", null, el("span", { class: "job" }, name || "?"), el("br"), target);
  }

  function span(ms) {
    if (ms === null || ms === undefined) return "-";
    if (ms < 1000) return `${Math.round(ms)} ms`;
    const seconds = ms / 1000;
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    let m = Math.floor(seconds / 60);
    const s = Math.floor(seconds) % 60;
    if (m < 60) return `${m} min ${String(s).padStart(2, "0")} s`;
    let h = Math.floor(m / 60);
    m %= 60;
    if (h < 24) return `${h} h ${String(m).padStart(2, "0")} min`;
    const d = Math.floor(h / 24);
    h %= 24;
    return `${d} d ${h} h`;
  }

  function ago(now, then) {
    return then ? `${span(Math.max(0, now - then))} ago` : "-";
  }

  function utc(ms) {
    return ms ? `${new Date(ms).toISOString().replace("T", " ").slice(0, 19)} UTC` : "";
  }

  function actionForm(action, fields, label, cls, confirmText) {
    const form = el("form", { method: "post", action, "data-action": true, "data-confirm": confirmText || null });
    form.append(el("input", { type: "hidden", name: "csrf", value: csrf }));
    for (const [name, value] of Object.entries(fields)) form.append(el("input", { type: "hidden", name, value }));
    form.append(el("button", { type: "submit", class: cls }, label));
    return form;
  }

  function emptyRow(columns, text) {
    return el("tr", { class: "empty" }, el("td", { colspan: columns }, text));
  }

  function fill(id, rows, columns, emptyText) {
    document.getElementById(id).replaceChildren(...(rows.length ? rows : [emptyRow(columns, emptyText)]));
  }

  // -- the throughput chart -----------------------------------------------------------------

  function chart(tp) {
    const total = tp.succeeded.length;
    const width = Math.max(1, Math.ceil(total / MAX_BARS));
    const retried = tp.retried && tp.retried.length ? tp.retried : new Array(total).fill(0);
    const bars = [];
    for (let i = 0; i < total; i += width) {
      const sum = (series) => series.slice(i, i + width).reduce((a, b) => a + b, 0);
      bars.push([tp.start_minute + i, sum(tp.succeeded), sum(tp.failed) + sum(retried)]);
    }
    const height = 30;
    const peak = Math.max(1, ...bars.map(([, ok, bad]) => ok + bad));
    const sumOk = tp.succeeded.reduce((a, b) => a + b, 0);
    const sumBad = tp.failed.reduce((a, b) => a + b, 0);
    const sumRetried = retried.reduce((a, b) => a + b, 0);
    // As the page says (page.caption): failed = jobs failed for good, retried = failed runs run again.
    const caption = `${sumOk} succeeded, ${sumBad} failed${sumRetried ? `, ${sumRetried} retried` : ""}`;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "chart");
    svg.setAttribute("viewBox", `0 0 ${bars.length} ${height}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", caption);
    bars.forEach(([minute, ok, bad], index) => {
      if (!ok && !bad) return;
      const group = document.createElementNS(SVG, "g");
      const title = document.createElementNS(SVG, "title");
      const when = new Date(minute * 60000).toISOString().slice(11, 16);
      title.textContent = `${when} UTC${width > 1 ? ` +${width} min` : ""}: ${ok} succeeded, ${bad} failed runs`;
      group.append(title);
      const hOk = (ok / peak) * height;
      const hBad = (bad / peak) * height;
      for (const [cls, value, y, h] of [["ok", ok, height - hOk, hOk], ["bad", bad, height - hOk - hBad, hBad]]) {
        if (!value) continue;
        const rect = document.createElementNS(SVG, "rect");
        rect.setAttribute("class", cls);
        rect.setAttribute("x", index);
        rect.setAttribute("y", y.toFixed(2));
        rect.setAttribute("width", "0.8");
        rect.setAttribute("height", h.toFixed(2));
        group.append(rect);
      }
      svg.append(group);
    });
    return [svg, el("span", { class: "caption", title: captionTitle }, caption)];
  }

  // -- the tables ---------------------------------------------------------------------------

  const pausedTitle = "paused: workers start none of its jobs; dispatch and delayed jobs still fill it";

  function queueRow(q) {
    const name = el("td", { class: "name" }, el("a", { href: link("queue", { queue: q.queue }) }, q.queue));
    if (q.paused) name.append(" ", el("span", { class: "badge paused", title: pausedTitle }, "paused"));
    const row = el("tr", { "data-queue": q.queue }, name);
    for (const key of ["waiting", "ready", "delayed", "running", "failed"]) row.append(td(q[key], `num ${key}`));
    row.append(td(span(q.latency_ms), "num latency"));
    row.append(el("td", { class: "throughput" }, ...chart(q.throughput)));
    row.append(td(`${q.totals.succeeded} succeeded / ${q.totals.failed} failed`, "num totals"));
    const actions = el("td", { class: "actions" });
    if (!readOnly && q.paused) actions.append(actionForm("api/queue/resume", { queue: q.queue }, "Resume", "resume"));
    if (!readOnly && !q.paused) {
      const ask = `Pause queue ${q.queue}? Workers start none of its jobs until it is resumed; running jobs finish.`;
      actions.append(actionForm("api/queue/pause", { queue: q.queue }, "Pause", "pause", ask));
    }
    if (q.failed && !readOnly) {
      const ask = `Retry every failed job of queue ${q.queue}?`;
      actions.append(actionForm("api/failed/retry-all", { queue: q.queue }, "Retry all failed", "retry-all", ask));
    }
    row.append(actions);
    return row;
  }

  function failedRow(job, now, open) {
    const error = job.error;
    const summary = `[${error.reason || "?"}] ${error.type}: ${error.message}`.trim();
    const errorCell = el("td", { class: "error" }, el("span", { class: "summary" }, summary));
    const details = (label, text, cls) => {
      const box = el("details", { class: cls || null }, el("summary", null, label), el("pre", null, text));
      box.open = open.has(`${job.queue}/${job.id}/${label}`);
      box.dataset.key = `${job.queue}/${job.id}/${label}`;
      errorCell.append(box);
    };
    if (error.traceback) details("traceback", error.traceback);
    if ("payload" in job) details("payload", JSON.stringify(job.payload, null, 2).slice(0, 4000), "payload");
    const actions = el("td", { class: "actions" });
    if (!readOnly) {
      const fields = { queue: job.queue, id: job.id };
      actions.append(
        actionForm("api/failed/retry", fields, "Retry", "retry"),
        actionForm("api/failed/forget", fields, "Forget", "forget", `Forget failed job ${job.id}?`),
      );
    }
    return el(
      "tr",
      { "data-queue": job.queue, "data-id": job.id },
      td(job.queue),
      jobCell(job.name, job.id, job.queue),
      td(`${job.attempts}/${job.max_attempts || "?"}`, "num attempts"),
      td(ago(now, job.finished_ms), null, utc(job.finished_ms)),
      errorCell,
      actions,
    );
  }

  function runningRow(job) {
    return el(
      "tr",
      { "data-id": job.id },
      td(job.queue),
      jobCell(job.name, job.id),
      td(job.worker || "-", "worker"),
      td(`${job.attempt}/${job.max_attempts || "?"}`, "num"),
      td(job.run_ms === null ? "just started" : span(job.run_ms), "num runtime"),
      td(utc(job.lease_deadline_ms), "num"),
      abortCell(job),
    );
  }

  function abortCell(job) {
    const cell = el("td", { class: "actions" });
    if (!readOnly) {
      const ask = `Abort job ${job.id}? It will not run (again).`;
      cell.append(actionForm("api/abort", { queue: job.queue, id: job.id }, "Abort", "abort", ask));
    }
    return cell;
  }

  function workerRow(w, now) {
    const c = w.counters;
    return el(
      "tr",
      { "data-worker": w.id },
      td(w.id, "worker"),
      td(`${w.host}:${w.pid}`),
      td(w.queues.join(", ")),
      td(`${w.running.length}/${w.concurrency}`, "num"),
      td(span(now - w.started_ms), "num"),
      td(ago(now, w.seen_ms), "num"),
      td(`${c.succeeded || 0} / ${c.retried || 0} / ${c.failed || 0}`, "num"),
    );
  }

  function scheduleRow(s, now) {
    return el(
      "tr",
      { "data-schedule": `${s.queue}/${s.id}` },
      td(s.queue),
      td(s.id),
      td(s.rule),
      td(ago(now, s.last_run_ms), "num"),
      td(utc(s.next_tick_ms), "num"),
      td(String(s.skipped), "num"),
      td(String(s.missed), "num"),
      td(ago(now, s.scheduler_seen_ms), "num"),
    );
  }

  function eventRow(ev, now) {
    return el(
      "tr",
      { class: `kind-${ev.kind}` },
      td(ago(now, ev.at_ms), null, utc(ev.at_ms)),
      td(ev.queue),
      el("td", null, el("span", { class: `badge ${ev.kind}` }, ev.kind)),
      el("td", null, el("span", { class: "job" }, ev.name || ""), " ", el("code", null, ev.job_id)),
      td(ev.duration_ms === null ? "" : span(ev.duration_ms), "num"),
      td(ev.error, "error"),
    );
  }

  // "1-50 of 124", or "1-3 of 7 matching (124 failed)": as page.failed_count says it.
  function failedCount(page, shown) {
    const filtered = Boolean(page.name || page.error);
    const of = filtered ? page.matched : page.total;
    const part = shown ? `${page.offset + 1}-${page.offset + shown}` : "0";
    let text = `${part} of ${of}${filtered ? ` matching (${page.total} failed)` : ""}`;
    if (!page.complete) text += `, searched the newest ${page.scanned}`;
    return text;
  }

  function failedPager(page, shown) {
    const filtered = Boolean(page.name || page.error);
    const of = filtered ? page.matched : page.total;
    const keep = {};
    if (page.name) keep.name = page.name;
    if (page.error) keep.error = page.error;
    const links = [];
    if (page.offset > 0) {
      const offset = Math.max(0, page.offset - page.limit);
      links.push(el("a", { class: "newer", href: `${link("", { offset, ...keep })}#failed` }, "newer"));
    }
    if (page.offset + shown < of) {
      links.push(el("a", { class: "older", href: `${link("", { offset: page.offset + shown, ...keep })}#failed` }, "older"));
    }
    return links;
  }

  function render(state) {
    const now = state.now_ms;
    const open = new Set(
      [...document.querySelectorAll("#failed-body details[open]")].map((d) => d.dataset.key || ""),
    );
    fill("queues-body", state.queues.map(queueRow), 10, "no queues yet");
    fill("running-body", state.running.map(runningRow), 7, "no running jobs");
    fill("failed-body", state.failed.map((job) => failedRow(job, now, open)), 6, "no failed jobs");
    fill("workers-body", state.workers.map((w) => workerRow(w, now)), 7, "no worker alive");
    fill("events-body", state.events.map((ev) => eventRow(ev, now)), 6, "no events yet");
    fill("schedules-body", state.schedules.map((s) => scheduleRow(s, now)), 8, "no schedules");
    document.getElementById("schedules-count").textContent = state.schedules.length;
    document.getElementById("schedule-problems").replaceChildren(
      ...state.schedule_problems.map((text) => el("p", { class: "problem" }, text)),
    );
    document.getElementById("running-count").textContent = state.running.length;
    document.getElementById("failed-count").textContent = failedCount(state.failed_page, state.failed.length);
    document.getElementById("failed-pager").replaceChildren(...failedPager(state.failed_page, state.failed.length));
    const lifetime = state.queues.reduce((sum, q) => [sum[0] + q.totals.succeeded, sum[1] + q.totals.failed], [0, 0]);
    document.getElementById("lifetime").textContent = `lifetime: ${lifetime[0]} succeeded, ${lifetime[1]} failed`;
    document.getElementById("workers-count").textContent = state.workers.length;
    const status = document.getElementById("status");
    status.textContent = `live, as of ${utc(now)}`;
    status.dataset.now = now;
    status.classList.remove("offline");
  }

  // -- polling and actions ------------------------------------------------------------------

  async function refresh() {
    clearTimeout(timer);
    try {
      // The failed jobs' page and filter come from the address (?offset=&name=&error=).
      const params = new URLSearchParams(window.location.search);
      params.set("minutes", minutes);
      const response = await fetch(`api/state?${params}`, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        cache: "no-store",
      });
      const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
      if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
      render(data);
    } catch (error) {
      const status = document.getElementById("status");
      status.textContent = `not updating: ${error.message}`;
      status.classList.add("offline");
    } finally {
      timer = setTimeout(refresh, refreshMs);
    }
  }

  function flash(text, bad) {
    const box = document.getElementById("flash");
    box.textContent = text;
    box.classList.toggle("bad", Boolean(bad));
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-action")) return;
    event.preventDefault();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    for (const button of form.querySelectorAll("button")) button.disabled = true;
    try {
      const response = await fetch(form.getAttribute("action"), {
        method: "POST",
        headers: {
          Accept: "application/json",
          "Content-Type": "application/x-www-form-urlencoded",
          "X-CSRF-Token": csrf,
        },
        credentials: "same-origin",
        body: new URLSearchParams(new FormData(form)),
      });
      const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
      if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
      if ("requeued" in data) flash(`requeued ${data.requeued} job(s)`);
      else if ("forgotten" in data) flash(`forgot ${data.forgotten} job(s)`);
      else if ("aborted" in data) flash(data.aborted ? "aborted" : "not aborted: it has ended already");
      else if ("paused" in data) flash(`${data.paused ? "paused" : "resumed"} ${data.queue}`);
      if ("paused" in data && pageKind !== "main") window.location.reload(); // its button flips
    } catch (error) {
      flash(`failed: ${error.message}`, true);
    }
    if (pageKind === "main") await refresh();
  });

  for (const button of document.querySelectorAll(".ranges button")) {
    button.addEventListener("click", () => {
      minutes = parseInt(button.dataset.minutes, 10);
      for (const other of document.querySelectorAll(".ranges button")) other.classList.toggle("on", other === button);
      refresh();
    });
  }

  if (pageKind === "main") {
    body.classList.add("live");
    timer = setTimeout(refresh, refreshMs);
  }
})();
