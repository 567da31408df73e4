"""The dashboard page, rendered on the server from a snapshot (data.py).

dashboard.js renders the same rows from /api/state every few seconds; the markup here is
what a browser shows first, and all it shows without JavaScript (the buttons still work as
plain form POSTs). Everything from Redis is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

import orjson

from ..records import Event, Throughput, WorkerInfo

MAX_BARS = 120  # the chart groups minutes so that it never draws more bars than this


def e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def span(ms: float | None) -> str:
    """A duration, short: 850 ms, 12.3 s, 4 min 05 s, 2 h 03 min, 3 d 4 h."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def ago(now_ms: int, then_ms: int | None) -> str:
    return "-" if not then_ms else f"{span(max(0, now_ms - then_ms))} ago"


def utc(ms: int | None) -> str:
    return "" if not ms else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def bins(series: Throughput) -> list[tuple[int, int, int]]:
    """(first minute, succeeded, failed) per bar, at most MAX_BARS bars."""
    minutes = len(series.succeeded)
    width = max(1, math.ceil(minutes / MAX_BARS))
    return [
        (
            series.start_minute + i,
            sum(series.succeeded[i : i + width]),
            sum(series.failed[i : i + width]),
        )
        for i in range(0, minutes, width)
    ]


def chart(series: Throughput) -> str:
    """Stacked bars of runs per minute (succeeded below, failed above) as inline SVG."""
    bars = bins(series)
    height = 30
    peak = max((s + f for _, s, f in bars), default=0) or 1
    width = max(1, math.ceil(len(series.succeeded) / MAX_BARS))
    parts: list[str] = []
    for index, (minute, ok, bad) in enumerate(bars):
        if not ok and not bad:
            continue
        when = datetime.fromtimestamp(minute * 60, UTC).strftime("%H:%M")
        label = f"{when} UTC{f' +{width} min' if width > 1 else ''}: {ok} succeeded, {bad} failed"
        h_ok, h_bad = ok / peak * height, bad / peak * height
        parts.append(f"<g><title>{e(label)}</title>")
        if ok:
            parts.append(
                f'<rect class="ok" x="{index}" y="{height - h_ok:.2f}" width="0.8" height="{h_ok:.2f}"/>'
            )
        if bad:
            y = height - h_ok - h_bad
            parts.append(f'<rect class="bad" x="{index}" y="{y:.2f}" width="0.8" height="{h_bad:.2f}"/>')
        parts.append("</g>")
    total_ok, total_bad = sum(series.succeeded), sum(series.failed)
    caption = f"{total_ok} succeeded, {total_bad} failed"
    return (
        f'<svg class="chart" viewBox="0 0 {len(bars)} {height}" preserveAspectRatio="none" '
        f'role="img" aria-label="{e(caption)}">{"".join(parts)}</svg>'
        f'<span class="caption">{e(caption)}</span>'
    )


def _form(action: str, csrf: str, fields: dict[str, str], label: str, css: str, confirm: str = "") -> str:
    hidden = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in fields.items())
    ask = f' data-confirm="{e(confirm)}"' if confirm else ""
    return (
        f'<form method="post" action="{e(action)}" data-action{ask}>'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">{hidden}'
        f'<button type="submit" class="{e(css)}">{e(label)}</button></form>'
    )


def queue_rows(queues: Sequence[dict[str, Any]], csrf: str, read_only: bool) -> str:
    if not queues:
        return '<tr class="empty"><td colspan="7">no queues yet</td></tr>'
    rows = []
    for q in queues:
        action = ""
        if q["failed"] and not read_only:
            action = _form(
                "api/failed/retry-all", csrf, {"queue": q["queue"]}, "Retry all failed", "retry-all"
            )
        rows.append(
            f'<tr data-queue="{e(q["queue"])}"><td class="name">{e(q["queue"])}</td>'
            + "".join(f'<td class="num {k}">{q[k]}</td>' for k in ("ready", "delayed", "running", "failed"))
            + f'<td class="throughput">{chart(q["throughput"])}</td><td class="actions">{action}</td></tr>'
        )
    return "".join(rows)


def failed_rows(failed: Sequence[dict[str, Any]], now_ms: int, csrf: str, read_only: bool) -> str:
    if not failed:
        return '<tr class="empty"><td colspan="6">no failed jobs</td></tr>'
    rows = []
    for job in failed:
        error = job["error"]
        summary = f"[{error['reason'] or '?'}] {error['type']}: {error['message']}".strip()
        details = ""
        if error["traceback"]:
            details += f"<details><summary>traceback</summary><pre>{e(error['traceback'])}</pre></details>"
        if "payload" in job:
            payload = orjson.dumps(job["payload"], option=orjson.OPT_INDENT_2).decode()[:4000]
            details += f'<details class="payload"><summary>payload</summary><pre>{e(payload)}</pre></details>'
        actions = ""
        if not read_only:
            fields = {"queue": job["queue"], "id": job["id"]}
            actions = _form("api/failed/retry", csrf, fields, "Retry", "retry") + _form(
                "api/failed/forget", csrf, fields, "Forget", "forget", f"Forget failed job {job['id']}?"
            )
        rows.append(
            f'<tr data-queue="{e(job["queue"])}" data-id="{e(job["id"])}">'
            f"<td>{e(job['queue'])}</td>"
            f'<td><span class="job">{e(job["name"] or "?")}</span><br><code>{e(job["id"])}</code></td>'
            f'<td class="num attempts">{job["attempts"]}/{e(job["max_attempts"] or "?")}</td>'
            f'<td title="{e(utc(job["finished_ms"]))}">{e(ago(now_ms, job["finished_ms"]))}</td>'
            f'<td class="error"><span class="summary">{e(summary)}</span>{details}</td>'
            f'<td class="actions">{actions}</td></tr>'
        )
    return "".join(rows)


def running_rows(running: Sequence[dict[str, Any]]) -> str:
    if not running:
        return '<tr class="empty"><td colspan="6">no running jobs</td></tr>'
    return "".join(
        f'<tr data-id="{e(job["id"])}"><td>{e(job["queue"])}</td>'
        f'<td><span class="job">{e(job["name"] or "?")}</span><br><code>{e(job["id"])}</code></td>'
        f'<td class="worker">{e(job["worker"] or "-")}</td>'
        f'<td class="num">{job["attempt"]}/{e(job["max_attempts"] or "?")}</td>'
        f'<td class="num runtime">{e("just started" if job["run_ms"] is None else span(job["run_ms"]))}</td>'
        f'<td class="num">{e(utc(job["lease_deadline_ms"]))}</td></tr>'
        for job in running
    )


def worker_rows(workers: Iterable[WorkerInfo], now_ms: int) -> str:
    rows = [
        f'<tr data-worker="{e(w.id)}"><td class="worker">{e(w.id)}</td><td>{e(w.host)}:{w.pid}</td>'
        f'<td>{e(", ".join(w.queues))}</td><td class="num">{len(w.running)}/{w.concurrency}</td>'
        f'<td class="num">{e(span(now_ms - w.started_ms))}</td>'
        f'<td class="num">{e(ago(now_ms, w.seen_ms))}</td>'
        f'<td class="num">{w.counters.get("succeeded", 0)} / {w.counters.get("retried", 0)} / '
        f"{w.counters.get('failed', 0)}</td></tr>"
        for w in workers
    ]
    return "".join(rows) or '<tr class="empty"><td colspan="7">no worker alive</td></tr>'


def event_rows(events: Iterable[Event], now_ms: int) -> str:
    rows = [
        f'<tr class="kind-{e(ev.kind)}"><td title="{e(utc(ev.at_ms))}">{e(ago(now_ms, ev.at_ms))}</td>'
        f'<td>{e(ev.queue)}</td><td><span class="badge {e(ev.kind)}">{e(ev.kind)}</span></td>'
        f'<td><span class="job">{e(ev.name or "")}</span> <code>{e(ev.job_id)}</code></td>'
        f'<td class="num">{e(span(ev.duration_ms) if ev.duration_ms is not None else "")}</td>'
        f'<td class="error">{e(ev.error)}</td></tr>'
        for ev in events
    ]
    return "".join(rows) or '<tr class="empty"><td colspan="6">no events yet</td></tr>'


def render(
    state: dict[str, Any],
    *,
    base: str,
    csrf: str,
    title: str,
    refresh_seconds: float,
    read_only: bool,
) -> str:
    now = state["now_ms"]
    minutes = state["minutes"]
    ranges = "".join(
        f'<button type="button" data-minutes="{m}" class="{"on" if m == minutes else ""}">{label}</button>'
        for m, label in ((60, "1 h"), (360, "6 h"), (1440, "24 h"))
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<base href="{e(base)}/">
<meta name="csrf-token" content="{e(csrf)}">
<title>{e(title)}</title>
<link rel="stylesheet" href="static/dashboard.css">
<script src="static/dashboard.js" defer></script>
</head>
<body data-refresh="{refresh_seconds:g}" data-minutes="{minutes}" data-read-only="{int(read_only)}">
<header>
<h1>{e(title)}</h1>
<span id="status" class="status" data-now="{now}">as of {e(utc(now))}</span>
<span id="flash" class="flash" role="status"></span>
</header>
<main>
<section id="queues">
<h2>Queues <span class="ranges">throughput over {ranges}</span></h2>
<table><thead><tr><th>queue</th><th class="num">ready</th><th class="num">delayed</th>
<th class="num">running</th><th class="num">failed</th><th>runs per minute</th><th></th></tr></thead>
<tbody id="queues-body">{queue_rows(state["queues"], csrf, read_only)}</tbody></table>
</section>
<section id="running">
<h2>Running jobs <span class="count" id="running-count">{len(state["running"])}</span></h2>
<table><thead><tr><th>queue</th><th>job</th><th>worker</th><th class="num">attempt</th>
<th class="num">running for</th><th class="num">lease until</th></tr></thead>
<tbody id="running-body">{running_rows(state["running"])}</tbody></table>
</section>
<section id="failed">
<h2>Failed jobs <span class="count" id="failed-count">{len(state["failed"])}</span></h2>
<table><thead><tr><th>queue</th><th>job</th><th class="num">attempts</th><th>failed</th>
<th>error</th><th></th></tr></thead>
<tbody id="failed-body">{failed_rows(state["failed"], now, csrf, read_only)}</tbody></table>
</section>
<section id="workers">
<h2>Workers <span class="count" id="workers-count">{len(state["workers"])}</span></h2>
<table><thead><tr><th>worker</th><th>host:pid</th><th>queues</th><th class="num">running</th>
<th class="num">up for</th><th class="num">last heartbeat</th>
<th class="num">succeeded / retried / failed</th></tr></thead>
<tbody id="workers-body">{worker_rows(state["workers"], now)}</tbody></table>
</section>
<section id="events">
<h2>Recent events</h2>
<table><thead><tr><th>when</th><th>queue</th><th>event</th><th>job</th><th class="num">ran</th>
<th>error</th></tr></thead>
<tbody id="events-body">{event_rows(state["events"], now)}</tbody></table>
</section>
</main>
</body>
</html>
"""
