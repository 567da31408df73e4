"""The web dashboard: queues (latency, throughput, lifetime totals), failed jobs with paging,
filters, retry and forget, running jobs, alive workers and recent events, refreshed every few
seconds; a page per job and per queue (its ready and delayed jobs).

    aiojobs-redis dashboard --port 8080                  # binds 127.0.0.1

    from aiojobs_redis.dashboard import create_app       # or inside your ASGI app
    app.mount("/jobs", create_app(token=os.environ["DASHBOARD_TOKEN"]))

Needs the 'dashboard' extra (Starlette; uvicorn for the command). See app.py for the
endpoints and auth.py for access and CSRF rules.
"""

from .app import create_app

__all__ = ["create_app"]
