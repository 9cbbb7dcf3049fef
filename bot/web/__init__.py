"""The control room: the HTTP server `livedesk run` serves on LIVEDESK_HTTP_HOST:LIVEDESK_HTTP_PORT.

`server` builds the one aiohttp application: the Slack slash command, `/api/v1` (`api`), the
dashboard (`dashboard`), `/metrics`, `/healthz` and `/readyz`. `context.WebContext` is everything
the routes may use; they get it from the application, never from globals.
"""
