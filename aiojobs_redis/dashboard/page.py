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
from urllib.parse import urlencode

import orjson

from ..listing import Totals
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
    """(first minute, succeeded, failed) per bar, at most MAX_BARS bars; failed counts every
    failed run, retried or not (the bar's red part)."""
    minutes = len(series.succeeded)
    width = max(1, math.ceil(minutes / MAX_BARS))
    retried = series.retried or [0] * minutes
    return [
        (
            series.start_minute + i,
            sum(series.succeeded[i : i + width]),
            sum(series.failed[i : i + width]) + sum(retried[i : i + width]),
        )
        for i in range(0, minutes, width)
    ]


def caption(series: Throughput) -> str:
    """The chart's caption. "failed" counts jobs failed for good (they entered the failed
    set, as the queue row's failed column counts them); "retried" the failed runs that will
    run again. Both are red in the bars."""
    text = f"{sum(series.succeeded)} succeeded, {sum(series.failed)} failed"
    retried = sum(series.retried)
    return text + (f", {retried} retried" if retried else "")


CAPTION_TITLE = (
    "runs in the period shown: succeeded; failed = jobs that failed for good and entered the failed "
    "set; retried = failed attempts that will run again"
)


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
        label = f"{when} UTC{f' +{width} min' if width > 1 else ''}: {ok} succeeded, {bad} failed runs"
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
    said = caption(series)
    return (
        f'<svg class="chart" viewBox="0 0 {len(bars)} {height}" preserveAspectRatio="none" '
        f'role="img" aria-label="{e(said)}">{"".join(parts)}</svg>'
        f'<span class="caption" title="{e(CAPTION_TITLE)}">{e(said)}</span>'
    )


def _form(action: str, csrf: str, fields: dict[str, str], label: str, css: str, confirm: str = "") -> str:
    hidden = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in fields.items())
    ask = f' data-confirm="{e(confirm)}"' if confirm else ""
    return (
        f'<form method="post" action="{e(action)}" data-action{ask}>'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">{hidden}'
        f'<button type="submit" class="{e(css)}">{e(label)}</button></form>'
    )


def link(path: str, **params: object) -> str:
    """A relative link with its query (the page's <base> makes it work when mounted)."""
    return path + ("?" + urlencode({k: str(v) for k, v in params.items()}) if params else "")


def abort_form(queue: str, job_id: str, csrf: str, read_only: bool) -> str:
    """The Abort button of a job not yet ended (none on a read-only dashboard)."""
    if read_only:
        return ""
    fields = {"queue": queue, "id": job_id}
    return _form("api/abort", csrf, fields, "Abort", "abort", f"Abort job {job_id}? It will not run (again).")


def pause_form(queue: str, paused: bool, csrf: str, read_only: bool) -> str:
    """The Pause button of a queue, or Resume of a paused one (none on a read-only dashboard)."""
    if read_only:
        return ""
    if paused:
        return _form("api/queue/resume", csrf, {"queue": queue}, "Resume", "resume")
    ask = f"Pause queue {queue}? Workers start none of its jobs until it is resumed; running jobs finish."
    return _form("api/queue/pause", csrf, {"queue": queue}, "Pause", "pause", ask)


QUEUE_COUNTS = ("waiting", "ready", "delayed", "running", "failed")  # the queue table's columns
WAITING_TITLE = "jobs of flows (chain, batch, depends_on) waiting for their prerequisites"
PAUSED_TITLE = "paused: workers start none of its jobs; dispatch and delayed jobs still fill it"


def paused_badge(paused: bool) -> str:
    return f' <span class="badge paused" title="{e(PAUSED_TITLE)}">paused</span>' if paused else ""


def retry_all_confirm(queue: str) -> str:
    return f"Retry every failed job of queue {queue}?"


def totals_text(totals: Totals) -> str:
    return f"{totals.succeeded} succeeded / {totals.failed} failed"


def queue_rows(queues: Sequence[dict[str, Any]], csrf: str, read_only: bool) -> str:
    if not queues:
        return '<tr class="empty"><td colspan="10">no queues yet</td></tr>'
    rows = []
    for q in queues:
        action = pause_form(q["queue"], q["paused"], csrf, read_only)
        if q["failed"] and not read_only:
            action += _form(
                "api/failed/retry-all",
                csrf,
                {"queue": q["queue"]},
                "Retry all failed",
                "retry-all",
                retry_all_confirm(q["queue"]),
            )
        name = (
            f'<a href="{e(link("queue", queue=q["queue"]))}">{e(q["queue"])}</a>{paused_badge(q["paused"])}'
        )
        rows.append(
            f'<tr data-queue="{e(q["queue"])}"><td class="name">{name}</td>'
            + "".join(f'<td class="num {k}">{q[k]}</td>' for k in QUEUE_COUNTS)
            + f'<td class="num latency">{e(span(q["latency_ms"]))}</td>'
            + f'<td class="throughput">{chart(q["throughput"])}</td>'
            + f'<td class="num totals">{e(totals_text(q["totals"]))}</td>'
            + f'<td class="actions">{action}</td></tr>'
        )
    return "".join(rows)


def failed_count(page: dict[str, Any], shown: int) -> str:
    """ "50 of 124", or "3 of 7 matching (124 failed)" when filtered."""
    filtered = bool(page["name"] or page["error"])
    of = page["matched"] if filtered else page["total"]
    first = page["offset"] + 1 if shown else page["offset"]
    part = f"{first}-{page['offset'] + shown}" if shown else "0"
    text = f"{part} of {of}" + (f" matching ({page['total']} failed)" if filtered else "")
    if not page["complete"]:
        text += f", searched the newest {page['scanned']}"
    return text


def failed_pager(page: dict[str, Any], shown: int) -> str:
    """Newer and older links, keeping the filters."""
    filtered = bool(page["name"] or page["error"])
    of = page["matched"] if filtered else page["total"]
    keep = {k: page[k] for k in ("name", "error") if page[k]}
    links = []
    if page["offset"] > 0:
        newer = max(0, page["offset"] - page["limit"])
        links.append(f'<a class="newer" href="{e(link("", offset=newer, **keep))}#failed">newer</a>')
    if page["offset"] + shown < of:
        older = page["offset"] + shown
        links.append(f'<a class="older" href="{e(link("", offset=older, **keep))}#failed">older</a>')
    return " ".join(links)


def failed_filter(page: dict[str, Any]) -> str:
    """A plain GET form: works without JavaScript, and the address keeps the filter."""
    return (
        '<form class="filter" method="get" action="">'
        f'<input type="search" name="name" placeholder="job name" value="{e(page["name"])}">'
        f'<input type="search" name="error" placeholder="error text" value="{e(page["error"])}">'
        '<button type="submit">Filter</button></form>'
    )


def job_cell(queue: str, job_id: str, name: str | None) -> str:
    """The job's name and id, linking to its detail page."""
    href = link("job", queue=queue, id=job_id)
    return f'<span class="job">{e(name or "?")}</span><br><a href="{e(href)}"><code>{e(job_id)}</code></a>'


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
            f"<td>{job_cell(job['queue'], job['id'], job['name'])}</td>"
            f'<td class="num attempts">{job["attempts"]}/{e(job["max_attempts"] or "?")}</td>'
            f'<td title="{e(utc(job["finished_ms"]))}">{e(ago(now_ms, job["finished_ms"]))}</td>'
            f'<td class="error"><span class="summary">{e(summary)}</span>{details}</td>'
            f'<td class="actions">{actions}</td></tr>'
        )
    return "".join(rows)


def running_rows(running: Sequence[dict[str, Any]], csrf: str, read_only: bool) -> str:
    if not running:
        return '<tr class="empty"><td colspan="7">no running jobs</td></tr>'
    return "".join(
        f'<tr data-id="{e(job["id"])}"><td>{e(job["queue"])}</td>'
        f'<td><span class="job">{e(job["name"] or "?")}</span><br><code>{e(job["id"])}</code></td>'
        f'<td class="worker">{e(job["worker"] or "-")}</td>'
        f'<td class="num">{job["attempt"]}/{e(job["max_attempts"] or "?")}</td>'
        f'<td class="num runtime">{e("just started" if job["run_ms"] is None else span(job["run_ms"]))}</td>'
        f'<td class="num">{e(utc(job["lease_deadline_ms"]))}</td>'
        f'<td class="actions">{abort_form(job["queue"], job["id"], csrf, read_only)}</td></tr>'
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


def schedule_rows(schedules: Sequence[dict[str, Any]], now_ms: int) -> str:
    rows = [
        f'<tr data-schedule="{e(s["queue"])}/{e(s["id"])}"><td>{e(s["queue"])}</td><td>{e(s["id"])}</td>'
        f'<td>{e(s["rule"])}</td><td class="num">{e(ago(now_ms, s["last_run_ms"]))}</td>'
        f'<td class="num">{e(utc(s["next_tick_ms"]))}</td><td class="num">{s["skipped"]}</td>'
        f'<td class="num">{s["missed"]}</td>'
        f'<td class="num">{e(ago(now_ms, s["scheduler_seen_ms"]))}</td></tr>'
        for s in schedules
    ]
    return "".join(rows) or '<tr class="empty"><td colspan="8">no schedules</td></tr>'


def schedule_problems(problems: Sequence[str]) -> str:
    return "".join(f'<p class="problem">{e(p)}</p>' for p in problems)


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


def frame(
    title: str, *, base: str, csrf: str, read_only: bool, body_attrs: str, header: str, main: str
) -> str:
    """The page around a view: head (CSS and the script file: the CSP allows no inline
    script), the header bar, then `main`."""
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
<body {body_attrs} data-read-only="{int(read_only)}">
<header>
<h1>{e(title)}</h1>
{header}
<span id="flash" class="flash" role="status"></span>
</header>
<main>
{main}
</main>
</body>
</html>
"""


def lifetime(queues: Sequence[dict[str, Any]]) -> str:
    succeeded = sum(q["totals"].succeeded for q in queues)
    failed = sum(q["totals"].failed for q in queues)
    return f"lifetime: {succeeded} succeeded, {failed} failed"


LIFETIME_TITLE = (
    "runs counted by workers with telemetry since the totals began; failed = jobs that failed for good"
)


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
    failed_page = state["failed_page"]
    shown = len(state["failed"])
    main = f"""<section id="queues">
<h2>Queues <span class="count" id="lifetime" title="{e(LIFETIME_TITLE)}">{e(lifetime(state["queues"]))}</span>
<span class="ranges">throughput over {ranges}</span></h2>
<table><thead><tr><th>queue</th>
<th class="num" title="{e(WAITING_TITLE)}">waiting</th><th class="num">ready</th><th class="num">delayed</th>
<th class="num">running</th><th class="num" title="jobs in the failed set now">failed</th>
<th class="num" title="how long the oldest ready job has waited">oldest ready</th>
<th title="{e(CAPTION_TITLE)}">runs per minute</th>
<th class="num" title="{e(LIFETIME_TITLE)}">lifetime</th><th></th></tr></thead>
<tbody id="queues-body">{queue_rows(state["queues"], csrf, read_only)}</tbody></table>
</section>
<section id="running">
<h2>Running jobs <span class="count" id="running-count">{len(state["running"])}</span></h2>
<table><thead><tr><th>queue</th><th>job</th><th>worker</th><th class="num">attempt</th>
<th class="num">running for</th><th class="num">lease until</th><th></th></tr></thead>
<tbody id="running-body">{running_rows(state["running"], csrf, read_only)}</tbody></table>
</section>
<section id="failed">
<h2>Failed jobs <span class="count" id="failed-count">{e(failed_count(failed_page, shown))}</span></h2>
<div class="toolbar">{failed_filter(failed_page)}
<span class="pager" id="failed-pager">{failed_pager(failed_page, shown)}</span></div>
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
<section id="schedules">
<h2>Schedules <span class="count" id="schedules-count">{len(state["schedules"])}</span></h2>
<div id="schedule-problems">{schedule_problems(state["schedule_problems"])}</div>
<table><thead><tr><th>queue</th><th>schedule</th><th>rule</th><th class="num">last run</th>
<th class="num">next</th><th class="num" title="ticks skipped while the last run was live">skipped</th>
<th class="num" title="ticks older than the grace after a downtime">missed</th>
<th class="num" title="when a worker's scheduler last called">scheduler seen</th></tr></thead>
<tbody id="schedules-body">{schedule_rows(state["schedules"], now)}</tbody></table>
</section>
<section id="events">
<h2>Recent events</h2>
<table><thead><tr><th>when</th><th>queue</th><th>event</th><th>job</th><th class="num">ran</th>
<th>error</th></tr></thead>
<tbody id="events-body">{event_rows(state["events"], now)}</tbody></table>
</section>"""
    return frame(
        title,
        base=base,
        csrf=csrf,
        read_only=read_only,
        body_attrs=f'data-page="main" data-refresh="{refresh_seconds:g}" data-minutes="{minutes}"',
        header=f'<span id="status" class="status" data-now="{now}">as of {e(utc(now))}</span>',
        main=main,
    )


def _static_header(now: int) -> str:
    return (
        '<a class="home" href="">overview</a>'
        f'<span id="status" class="status">as of {e(utc(now))} (reload to update)</span>'
    )


def _payload_block(value: Any) -> str:
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()[:20_000]
    return f'<details class="payload" open><summary>payload</summary><pre>{e(text)}</pre></details>'


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _result_text(job: dict[str, Any]) -> str:
    if "result" in job:
        return _json_text(job["result"])
    if job.get("result_kept"):
        return "kept (shown with --show-payloads)"
    return "-"


def render_job(view: dict[str, Any], *, base: str, csrf: str, title: str, read_only: bool) -> str:
    """One job: its fields, runs still in the event stream, its last error and traceback, and
    its payload when the dashboard shows payloads."""
    job, now = view["job"], view["now_ms"]
    error = job["error"]

    def when(ms: int | None) -> str:
        return f"{utc(ms)} ({ago(now, ms)})" if ms else "-"

    fields = [
        ("name", job["name"] or "?"),
        ("queue", job["queue"]),
        ("state", job["state"] or "?"),
        ("priority", str(job.get("priority", 0))),
        ("attempts used", f"{job['attempts']} of {job['max_attempts'] or '?'}"),
        ("runs / stalls", f"{job['runs']} / {job['stalls']}"),
        ("dispatched", when(job["created_ms"])),
        ("last due to run", when(job["scheduled_ms"])),
        ("last started", when(job["started_ms"])),
        ("ended", when(job["finished_ms"])),
        ("worker", job["worker"] or "-"),
        ("progress", "-" if job.get("progress") is None else _json_text(job["progress"])),
        ("result", _result_text(job)),
        *_flow_fields(job),
    ]
    rows = "".join(
        f'<tr><th>{e(k)}</th><td class="{e(k.replace(" ", "-"))}">{e(v)}</td></tr>' for k, v in fields
    )
    runs = [ev for ev in view["events"] if ev.kind != "started"]
    run_rows = (
        "".join(
            f'<tr class="kind-{e(ev.kind)}"><td title="{e(utc(ev.at_ms))}">{e(utc(ev.at_ms))}</td>'
            f'<td class="num">{ev.attempt}</td><td><span class="badge {e(ev.kind)}">{e(ev.kind)}</span></td>'
            f'<td class="num">{e(span(ev.duration_ms) if ev.duration_ms is not None else "")}</td>'
            f'<td class="error">{e(ev.error)}</td></tr>'
            for ev in runs
        )
        or '<tr class="empty"><td colspan="5">none left in the event stream</td></tr>'
    )
    last_error = '<p class="empty">no error recorded</p>'
    if error["reason"] or error["message"]:
        summary = f"[{error['reason'] or '?'}] {error['type']}: {error['message']}".strip()
        last_error = f'<p class="summary error">{e(summary)}</p>'
        if error["traceback"]:
            last_error += f'<pre class="traceback">{e(error["traceback"])}</pre>'
    actions = ""
    if job["state"] in ("waiting", "ready", "delayed", "running"):
        actions = abort_form(job["queue"], job["id"], csrf, read_only)
    if job["state"] == "failed" and not read_only:
        keys = {"queue": job["queue"], "id": job["id"]}
        actions = _form("api/failed/retry", csrf, keys, "Retry", "retry") + _form(
            "api/failed/forget", csrf, keys, "Forget", "forget", f"Forget failed job {job['id']}?"
        )
    payload = _payload_block(job["payload"]) if "payload" in job else ""
    main = f"""<section id="job" data-queue="{e(job["queue"])}" data-id="{e(job["id"])}">
<h2>Job <code>{e(job["id"])}</code></h2>
<div class="toolbar actions">{actions}</div>
<table class="fields"><tbody>{rows}</tbody></table>
{payload}
</section>
<section id="attempts">
<h2>Runs <span class="count">still in the event stream</span></h2>
<table><thead><tr><th>ended</th><th class="num">attempt</th><th>how</th><th class="num">ran</th>
<th>error</th></tr></thead><tbody id="attempts-body">{run_rows}</tbody></table>
</section>
<section id="last-error">
<h2>Last error <span class="count">only the last attempt's error and traceback are kept</span></h2>
{last_error}
</section>
{flow_panel(view)}"""
    return frame(
        f"{title}: job {job['id']}",
        base=base,
        csrf=csrf,
        read_only=read_only,
        body_attrs='data-page="job"',
        header=_static_header(now),
        main=main,
    )


def _flow_fields(job: dict[str, Any]) -> list[tuple[str, str]]:
    """The rows of a flow job's place in its flow: batch, prerequisites, failed_by."""
    rows = []
    if job.get("batch"):
        rows.append(("batch", job["batch"]))
    if job.get("prerequisites"):
        said = f"{job['prerequisites_pending']} of {len(job['prerequisites'])} not done yet"
        if job.get("run_on_dependency_failure"):
            said += "; it runs even if one fails"
        rows.append(("prerequisites", said))
    if job.get("failed_by"):
        rows.append(("failed by", job["failed_by"]))
    return rows


HERE = ' class="here"'  # the row of the job whose page it is
FLOW_TITLE = "the chain, batch or depends_on jobs this job belongs to, prerequisites first"


def flow_panel(view: dict[str, Any]) -> str:
    """The jobs of the flow the job belongs to, each linking to its page; none for a plain job."""
    flow = view.get("flow") or []
    if not flow:
        return ""
    queue, here = view["job"]["queue"], view["job"]["id"]
    rows = "".join(
        f'<tr data-id="{e(node["id"])}"{HERE if node["id"] == here else ""}>'
        f"<td>{job_cell(queue, node['id'], node['name'])}</td>"
        f'<td><span class="badge {e(node["state"])}">{e(node["state"])}</span></td>'
        f'<td class="waits-for">{e(node["waits_for"])}</td>'
        f'<td class="error">{e(node["failure"])}</td></tr>'
        for node in flow
    )
    count = f"{len(flow)} job(s)" + (
        "" if view.get("flow_complete", True) else f", the first {len(flow)} found"
    )
    batch = view.get("batch")
    summary = ""
    if batch is not None:
        summary = (
            f'<p class="batch">batch <code>{e(batch.batch_id)}</code>: {batch.total} member(s), '
            f"{batch.pending} pending, {batch.done} done, {batch.failed} failed</p>"
        )
    return f"""<section id="flow">
<h2 title="{e(FLOW_TITLE)}">Flow <span class="count" id="flow-count">{e(count)}</span></h2>
{summary}
<table><thead><tr><th>job</th><th>state</th><th>waits for</th><th>failure</th></tr></thead>
<tbody id="flow-body">{rows}</tbody></table>
</section>"""


QUEUE_SECTIONS = ("ready", "delayed", "waiting")  # the job lists of a queue's page


def _queue_pager(view: dict[str, Any], which: str) -> str:
    page = view[which]
    keep = {
        "queue": view["queue"],
        **{w: view[w]["offset"] for w in QUEUE_SECTIONS if w != which and w in view},
    }
    links = []
    if page["offset"] > 0:
        newer = {**keep, which: max(0, page["offset"] - page["limit"])}
        links.append(f'<a class="prev" href="{e(link("queue", **newer))}">previous</a>')
    if page["offset"] + len(page["jobs"]) < page["total"]:
        older = {**keep, which: page["offset"] + len(page["jobs"])}
        links.append(f'<a class="next" href="{e(link("queue", **older))}">next</a>')
    return " ".join(links)


def _queue_count(page: dict[str, Any]) -> str:
    shown = len(page["jobs"])
    if not shown:
        return f"0 of {page['total']}"
    return f"{page['offset'] + 1}-{page['offset'] + shown} of {page['total']}"


def _waiting_rows(view: dict[str, Any], which: str, csrf: str, read_only: bool) -> str:
    now, queue = view["now_ms"], view["queue"]
    rows = []
    for job in view[which]["jobs"]:
        due = job["due_ms"]
        if which == "delayed":
            when = f"in {span(max(0, due - now))}" if due and due > now else "due now"
        else:  # ready since, or waiting since
            when = ago(now, due)
        payload, level = "", ""
        if job.get("priority"):
            level = f' <span class="badge priority" title="level">priority {int(job["priority"])}</span>'
        if "payload" in job:
            text = orjson.dumps(job["payload"], option=orjson.OPT_INDENT_2).decode()[:4000]
            payload = f'<details class="payload"><summary>payload</summary><pre>{e(text)}</pre></details>'
        rows.append(
            f'<tr data-id="{e(job["id"])}"><td>{job_cell(queue, job["id"], job["name"])}{level}{payload}</td>'
            f'<td class="num due" title="{e(utc(due))}">{e(when)}</td>'
            f'<td class="num">{job["attempts"]}/{e(job["max_attempts"] or "?")}</td>'
            f'<td class="num" title="{e(utc(job["created_ms"]))}">{e(ago(now, job["created_ms"]))}</td>'
            f'<td class="actions">{abort_form(queue, job["id"], csrf, read_only)}</td></tr>'
        )
    empty = f"no {which} jobs"
    return "".join(rows) or f'<tr class="empty"><td colspan="5">{empty}</td></tr>'


def render_queue(view: dict[str, Any], *, base: str, csrf: str, title: str, read_only: bool) -> str:
    """One queue's ready jobs (next to run first), delayed jobs (soonest due first) and jobs
    of flows waiting for their prerequisites (oldest first)."""
    queue, now = view["queue"], view["now_ms"]
    latency = (
        "no ready job"
        if view["latency_ms"] is None
        else f"oldest ready job waiting {span(view['latency_ms'])}"
    )
    sections = []
    for which, since in (("ready", "ready since"), ("delayed", "due"), ("waiting", "waiting since")):
        if which not in view:
            continue
        sections.append(
            f"""<section id="{which}">
<h2>{which.capitalize()} jobs <span class="count" id="{which}-count">{e(_queue_count(view[which]))}</span>
</h2>
<div class="toolbar"><span class="pager">{_queue_pager(view, which)}</span></div>
<table><thead><tr><th>job</th><th class="num">{since}</th><th class="num">attempts used</th>
<th class="num">dispatched</th><th></th></tr></thead>
<tbody id="{which}-body">{_waiting_rows(view, which, csrf, read_only)}</tbody></table>
</section>"""
        )
    main = f"""<section id="queue" data-queue="{e(queue)}" data-paused="{int(view["paused"])}">
<h2>Queue {e(queue)}{paused_badge(view["paused"])} <span class="count" id="latency">{e(latency)}</span></h2>
<div class="toolbar actions">{pause_form(queue, view["paused"], csrf, read_only)}</div>
</section>
{"".join(sections)}"""
    return frame(
        f"{title}: queue {queue}",
        base=base,
        csrf=csrf,
        read_only=read_only,
        body_attrs='data-page="queue"',
        header=_static_header(now),
        main=main,
    )
