"""The dashboard through a real aiohttp client over a real SQLite store: sign-in, CSRF, escaping, pages.

The browser story is in tests/test_dashboard_browser.py; here each rule is checked on its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.typedefs import Handler

from bot.adapters.base import PermanentError
from bot.web import dashboard, server, views
from bot.web.auth import MAX_FAILURES
from bot.web.context import CONTEXT
from bot.web.sessions import COOKIE, SESSION_SECONDS, Sessions
from storage.interface import Store
from storage.models import ImportResult, Post, Source, SourceKind, SubscriptionState, Target
from storage.pg_store import open_postgres
from storage.store import open_sqlite
from storage.values import OutboxResults
from tests.dashboard_kit import TOKEN, SendTests, csrf_of, dashboard_app, sign_in
from tests.test_pg_search import CTYPE, _recreated

Client = TestClient[web.Request, web.Application]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
HOOK = "https://hooks.slack.com/services/T0000/B0000/abcdefghijklmnopqrstuvwx"
SOURCE = Source(id="harbour", title="Harbour <b>live</b>", kind=SourceKind.PAGE_TEXT)
NOW = datetime.now(UTC).replace(microsecond=0)


def post(n: int, title: str, *body: str, permalink: str | None = None, minutes: int = 0) -> Post:
    return Post(
        id=f"harbour-{n}",
        source_id=SOURCE.id,
        published_at=NOW - timedelta(minutes=minutes) + timedelta(seconds=n),
        title=title,
        body=body or (f"Body of post {n}.",),
        permalink=permalink,
    )


async def ingest(store: Store, *posts: Post) -> None:
    await store.ingest(ImportResult(source=SOURCE, posts=posts), location="test")


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A real store of each backend: the dashboard sees only the store's contract."""
    opened: Store
    if request.param == "sqlite":
        opened = await open_sqlite(tmp_path / "livedesk.db")
    else:
        url: str = request.getfixturevalue("postgres_url")
        opened = await open_postgres(_recreated(url, CTYPE))
    try:
        yield opened
    finally:
        await opened.close()


ClientFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
async def make_client(store: Store) -> AsyncIterator[ClientFactory]:
    clients: list[Client] = []

    async def make(app: web.Application | None = None, *, token: str | None = TOKEN) -> Client:
        client: Client = TestClient(TestServer(app or dashboard_app(store, token=token)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


# --- off, sign-in, sessions ----------------------------------------------------------------------


async def test_without_an_admin_token_the_dashboard_is_off(make_client: ClientFactory) -> None:
    client = await make_client(token=None)
    for path in ("/", "/login", "/stream", "/search?q=x", "/deliveries"):
        answer = await client.get(path, allow_redirects=False)
        assert answer.status == 404
        assert "set LIVEDESK_ADMIN_TOKEN" in await answer.text()
    answer = await client.post("/login", data={"token": ""}, allow_redirects=False)
    assert answer.status == 404


async def test_the_control_room_serves_the_dashboard(
    store: Store, make_client: ClientFactory
) -> None:
    for token, status, says in (
        (None, 404, "set LIVEDESK_ADMIN_TOKEN"),
        (TOKEN, 200, "Admin token"),
    ):
        context = dashboard_app(store, token=token)[CONTEXT]
        client = await make_client(server.build_app(context))
        answer = await client.get("/login")
        assert (answer.status, answer.content_type) == (status, "text/html")
        assert says in await answer.text()
        style = await client.get("/static/dashboard.css")
        assert style.status == 200 and style.content_type == "text/css"
        assert (await client.get("/static/dashboard.js")).status == 200
    csrf = await sign_in(client)  # the API's middleware leaves the dashboard's answers alone
    answer = await client.post("/deliveries/retry", data={"csrf": csrf}, allow_redirects=False)
    assert (answer.status, answer.headers["Location"]) == (303, "/deliveries")
    refused = await client.post("/deliveries/retry", data={}, allow_redirects=False)
    assert refused.status == 403 and refused.content_type == "text/html"


async def test_pages_send_a_stranger_to_the_login(make_client: ClientFactory) -> None:
    client = await make_client()
    for path in ("/", "/stream", "/search?q=ferry", "/subscriptions", "/deliveries"):
        answer = await client.get(path, allow_redirects=False)
        assert (answer.status, answer.headers["Location"]) == (303, "/login")
    fragment = await client.get("/stream/fragment?after=0")
    assert fragment.status == 401


async def test_the_session_cookie_is_httponly_and_strict(make_client: ClientFactory) -> None:
    client = await make_client()
    form = await client.get("/login")
    login_cookie = form.cookies["livedesk_login"]
    assert login_cookie["httponly"] and login_cookie["samesite"] == "Strict"
    answer = await client.post(
        "/login", data={"csrf": csrf_of(await form.text()), "token": TOKEN}, allow_redirects=False
    )
    assert answer.status == 303 and answer.headers["Location"] == "/"
    cookie = answer.cookies[COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    assert cookie["max-age"] == str(SESSION_SECONDS)
    assert not cookie["secure"]  # plain http here: a Secure cookie would never come back
    assert TOKEN not in cookie.value


async def test_over_https_the_session_cookie_is_secure(
    store: Store, make_client: ClientFactory
) -> None:
    @web.middleware
    async def behind_tls(request: web.Request, handler: Handler) -> web.StreamResponse:
        # What a TLS-terminating proxy setup does (aiohttp-remotes' XForwardedRelaxed): the
        # request is seen as the https one the browser made.
        return await handler(request.clone(scheme="https"))

    client = await make_client(dashboard_app(store, middlewares=(behind_tls,)))
    form = await client.get("/login")
    login_cookie = form.cookies["livedesk_login"]
    assert login_cookie["secure"] is True
    answer = await client.post(
        "/login",
        data={"csrf": csrf_of(await form.text()), "token": TOKEN},
        headers={
            "Cookie": f"livedesk_login={login_cookie.value}"
        },  # the jar keeps Secure ones for https
        allow_redirects=False,
    )
    assert answer.status == 303
    assert answer.cookies[COOKIE]["secure"] is True


async def test_a_wrong_token_is_refused_and_failures_are_rate_limited(
    make_client: ClientFactory,
) -> None:
    client = await make_client()
    for _ in range(MAX_FAILURES):
        form = await client.get("/login")
        answer = await client.post(
            "/login", data={"csrf": csrf_of(await form.text()), "token": "guess"}
        )
        assert answer.status == 401
        assert "That is not the admin token" in await answer.text()
        assert COOKIE not in answer.cookies
    form = await client.get("/login")
    answer = await client.post("/login", data={"csrf": csrf_of(await form.text()), "token": TOKEN})
    assert answer.status == 429  # even the right token waits now
    assert int(answer.headers["Retry-After"]) >= 1
    assert "Too many wrong tokens" in await answer.text()
    assert COOKIE not in answer.cookies


async def test_the_login_form_needs_its_own_csrf_token(make_client: ClientFactory) -> None:
    client = await make_client()
    await client.get("/login")
    answer = await client.post("/login", data={"csrf": "forged", "token": TOKEN})
    assert answer.status == 403
    assert COOKIE not in answer.cookies


async def test_a_session_expires_and_logout_ends_it(
    store: Store, make_client: ClientFactory
) -> None:
    now = [1_000_000.0]
    app = dashboard_app(store)
    app[dashboard.SESSIONS] = Sessions(clock=lambda: now[0])
    client = await make_client(app)
    csrf = await sign_in(client)
    assert (await client.get("/stream", allow_redirects=False)).status == 200
    now[0] += SESSION_SECONDS + 1
    assert (await client.get("/stream", allow_redirects=False)).status == 303

    csrf = await sign_in(client)
    [cookie] = [c for c in client.session.cookie_jar if c.key == COOKIE]
    answer = await client.post("/logout", data={"csrf": csrf}, allow_redirects=False)
    assert (answer.status, answer.headers["Location"]) == (303, "/login")
    assert (await client.get("/", allow_redirects=False)).headers["Location"] == "/login"
    replayed = await client.get(
        "/", headers={"Cookie": f"{COOKIE}={cookie.value}"}, allow_redirects=False
    )
    assert replayed.headers["Location"] == "/login"  # signed out here means refused here


async def test_a_session_holds_on_every_worker_with_the_token_and_no_other(
    store: Store, make_client: ClientFactory
) -> None:
    first = await make_client()
    csrf = await sign_in(first)
    [cookie] = [c.value for c in first.session.cookie_jar if c.key == COOKIE]
    second = await make_client()  # another process of the fleet, or this one restarted
    answer = await second.post(
        "/deliveries/retry",
        data={"csrf": csrf, "all": "1"},
        headers={"Cookie": f"{COOKIE}={cookie}"},
        allow_redirects=False,
    )
    assert (answer.status, answer.headers["Location"]) == (303, "/deliveries")
    rotated = await make_client(dashboard_app(store, token="a-new-admin-token"))
    refused = await rotated.get(
        "/", headers={"Cookie": f"{COOKIE}={cookie}"}, allow_redirects=False
    )
    assert refused.headers["Location"] == "/login"  # a new token ends every session
    session_id, expires, signature = cookie.split(".")
    for forged in (
        f"{session_id}.{int(expires) + 86400}.{signature}",  # a longer life
        f"{'y' if session_id.startswith('x') else 'x'}{session_id[1:]}.{expires}.{signature}",
        f"{session_id}.{expires}.",
        "garbage",
    ):
        answer = await second.get(
            "/", headers={"Cookie": f"{COOKIE}={forged}"}, allow_redirects=False
        )
        assert answer.headers["Location"] == "/login", forged


# --- CSRF ----------------------------------------------------------------------------------------


def _post_routes(app: web.Application) -> list[str]:
    return sorted(
        {
            r.resource.canonical
            for r in app.router.routes()
            if r.method == "POST" and r.resource is not None and r.resource.canonical != "/login"
        }
    )


async def test_every_form_post_without_the_csrf_token_is_refused(
    store: Store, make_client: ClientFactory
) -> None:
    feeds = store.feeds
    feed = await feeds.add(str(FIXTURES / "rss2.xml"), 60, origin="cli")
    sub, _ = await store.subscriptions.add(
        Target(platform="slack", address=HOOK, kind="webhook"), created_by="test"
    )
    await ingest(store, post(1, "Ferry"))
    pending = await store.outbox.pending_after(0)
    await store.outbox.record(OutboxResults(dead=[(pending[0].id, 3, "HTTP 500")]))
    sends = SendTests()
    app = dashboard_app(store, send_test=sends)
    client = await make_client(app)
    csrf = await sign_in(client)
    routes = _post_routes(app)
    assert routes == [
        "/blogs",
        "/blogs/{id}/{action}",
        "/deliveries/retry",
        "/logout",
        "/subscriptions/{id}/{action}",
    ]
    filled = {
        "/blogs": ["/blogs"],
        "/blogs/{id}/{action}": [f"/blogs/{feed.id}/{a}" for a in ("pause", "interval", "remove")],
        "/deliveries/retry": ["/deliveries/retry"],
        "/logout": ["/logout"],
        "/subscriptions/{id}/{action}": [f"/subscriptions/{sub.id}/{a}" for a in ("pause", "test")],
    }
    form = {"location": str(FIXTURES / "atom.xml"), "interval": "60", "all": "1"}
    for route in routes:
        for path in filled[route]:
            for forged in ({}, {"csrf": "not-the-token"}, {"csrf": csrf[:-1]}):
                answer = await client.post(path, data=form | forged, allow_redirects=False)
                assert answer.status == 403, path
                assert "security token is missing or wrong" in await answer.text()
    # Nothing happened, and the session is still open.
    assert [f.location for f in await feeds.list()] == [feed.location]
    assert (await feeds.get(feed.id)) == feed
    assert (await store.subscriptions.get(sub.id)).state == SubscriptionState.ACTIVE  # type: ignore[union-attr]
    assert sends.sent == []
    assert len(await store.outbox.dead()) == 1
    assert (await client.get("/", allow_redirects=False)).status == 200
    # The same forms with the token do their work.
    answer = await client.post(f"/subscriptions/{sub.id}/pause", data={"csrf": csrf})
    assert answer.status == 200 and "Subscription #1 paused." in await answer.text()


# --- escaping ------------------------------------------------------------------------------------


async def test_post_text_is_shown_as_text_never_as_markup(
    store: Store, make_client: ClientFactory
) -> None:
    await ingest(
        store,
        post(
            1,
            "<script>alert('title')</script> ferry",
            "<img src=x onerror=alert(1)> ferry crossing & more",
            permalink="javascript:alert(document.cookie)",
        ),
    )
    client = await make_client()
    await sign_in(client)
    for path in ("/stream", "/stream/fragment?after=0", "/search?q=ferry"):
        answer = await client.get(path)
        html = await answer.text()
        assert "<script>alert" not in html and "<img src=x" not in html, path
        assert "&lt;script&gt;alert(" in html, path
        assert "javascript:" not in html, path  # not a link
        assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
    html = await (await client.get("/stream")).text()
    assert "&lt;img src=x onerror=alert(1)&gt; ferry crossing &amp; more" in html
    assert "Harbour &lt;b&gt;live&lt;/b&gt;" in html  # the blog's title too


async def test_search_marks_the_hits_and_escapes_around_them(
    store: Store, make_client: ClientFactory
) -> None:
    await ingest(
        store,
        post(
            1, "Ferry service suspended", "All <b>ferry</b> crossings are off until further notice."
        ),
        post(2, "Harbour master speaks", "Nothing about boats."),
    )
    client = await make_client()
    await sign_in(client)
    html = await (await client.get("/search?q=ferry")).text()
    assert "<mark>Ferry</mark> service suspended" in html
    assert "<b>" not in html and "<mark>ferry</mark>" in html
    if store.backend == "sqlite":  # PostgreSQL's headline leaves tag-like words out of a snippet
        assert "All &lt;b&gt;<mark>ferry</mark>&lt;/b&gt; crossings" in html
    assert "Harbour master" not in html
    assert "1 post matches" in html
    unclosed = await (await client.get('/search?q="unclosed')).text()
    assert "unmatched &#34; as plain words" in unclosed  # the store's notice, shown
    assert "No post matches." in unclosed


async def test_an_unreadable_query_is_one_line(store: Store, make_client: ClientFactory) -> None:
    client = await make_client()
    await sign_in(client)
    answer = await client.get("/search?q=" + "(" * 3)
    assert answer.status == 200
    html = await answer.text()
    assert html.count('class="flash error"') == 1
    assert "Traceback" not in html


# --- blogs ---------------------------------------------------------------------------------------


async def test_blogs_are_added_paused_resumed_and_removed(
    store: Store, make_client: ClientFactory, tmp_path: Path
) -> None:
    feeds, changes = store.feeds, []
    client = await make_client(dashboard_app(store, feeds_changed=lambda: changes.append(1)))
    csrf = await sign_in(client)
    blog = tmp_path / "blog.xml"
    blog.write_bytes((FIXTURES / "rss2.xml").read_bytes())

    async def submit(path: str, **form: str) -> str:
        answer = await client.post(path, data={"csrf": csrf, **form})
        assert answer.status == 200
        return await answer.text()

    html = await submit("/blogs", location=str(blog), interval="30")
    assert f"Following {blog} every 30 s." in html
    [feed] = await feeds.list()
    assert (feed.location, feed.interval, feed.origin, feed.enabled) == (
        str(blog),
        30,
        "dashboard",
        True,
    )
    assert "waiting" in html and "not imported yet" in html
    assert "is already followed" in await submit("/blogs", location=str(blog), interval="30")
    assert "at least 10 seconds" in await submit(
        "/blogs", location="https://x.example/f", interval="5"
    )
    assert "not a number" in await submit("/blogs", location="https://x.example/f", interval="soon")
    assert "no such file on the server" in await submit("/blogs", location=str(tmp_path / "none"))
    assert "full path" in await submit("/blogs", location="blog.xml")
    assert "only http(s) URLs and files" in await submit("/blogs", location="ftp://x.example/f")
    assert len(await feeds.list()) == 1

    assert "now every 120 s." in await submit(f"/blogs/{feed.id}/interval", interval="120")
    assert (await feeds.get(feed.id)).interval == 120  # type: ignore[union-attr]
    assert "at least 10 seconds" in await submit(f"/blogs/{feed.id}/interval", interval="5")
    assert (await feeds.get(feed.id)).interval == 120  # type: ignore[union-attr]
    assert "paused." in await submit(f"/blogs/{feed.id}/pause")
    assert (await feeds.get(feed.id)).enabled is False  # type: ignore[union-attr]
    assert "resumed." in await submit(f"/blogs/{feed.id}/resume")
    assert (await feeds.get(feed.id)).enabled is True  # type: ignore[union-attr]
    assert "No longer following" in await submit(f"/blogs/{feed.id}/remove")
    assert await feeds.list() == []
    assert "No blog #99 is followed." in await submit("/blogs/99/pause")
    # added, slowed down, paused, resumed, removed: the poller is told each time
    assert len(changes) == 5


async def test_a_blog_shows_its_health_and_a_sparkline(
    store: Store, make_client: ClientFactory
) -> None:
    feeds = store.feeds
    feed = await feeds.add("https://news.example.org/live?token=s3cr3t-value", 60, origin="cli")
    await ingest(store, *(post(n, f"Post {n}", minutes=90 if n < 3 else 5) for n in range(1, 6)))
    await feeds.record_fetch(
        feed.id,
        at=NOW,
        error="HTTP 503 from the server",
        next_attempt_at=NOW + timedelta(minutes=2),
        source_id=SOURCE.id,
    )
    client = await make_client(dashboard_app(store))
    await sign_in(client)
    html = await (await client.get("/")).text()
    assert "s3cr3t-value" not in html  # the feed's token stays on the server
    assert "token=[secret]" in html
    assert "Harbour &lt;b&gt;live&lt;/b&gt;" in html
    assert "HTTP 503 from the server" in html and "failing" in html
    assert '<span class="rate">3</span> last hour · 5 in 24 h' in html
    assert "<polyline points=" in html


def test_stored_times_are_shown_in_the_zone() -> None:
    zone = ZoneInfo("Europe/Kyiv")
    assert views.stored_time("2026-01-01T10:00:00.123456Z", zone) == "2026-01-01 12:00"
    assert views.stored_time("2026-01-01T10:00:00", zone) == "2026-01-01 12:00"
    assert views.stored_time("not a time", zone) == "not a time"


def test_hourly_counts_and_the_sparkline() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    times = [now - timedelta(minutes=m) for m in (1, 2, 59, 61, 23 * 60 + 59, 24 * 60, -5)]
    counts = views.hourly_counts(times, now)
    assert len(counts) == 24
    assert counts[-1] == 3 and counts[-2] == 1 and counts[0] == 1 and sum(counts) == 5
    line = views.sparkline(counts)
    points = [tuple(map(float, p.split(","))) for p in line.points.split()]
    assert len(points) == 24 and points[0][0] == 0 and points[-1][0] == views.SPARK_WIDTH
    assert points[-1][1] == 1.0  # the busiest hour touches the top
    assert points[1][1] == views.SPARK_HEIGHT - 1  # an empty hour lies on the bottom
    flat = views.sparkline((0,) * 24)
    assert {p.split(",")[1] for p in flat.points.split()} == {f"{views.SPARK_HEIGHT - 1:.1f}"}


# --- the live stream -----------------------------------------------------------------------------


async def test_the_stream_fragment_gives_only_posts_newer_than_the_page(
    store: Store, make_client: ClientFactory
) -> None:
    await ingest(store, post(1, "First"), post(2, "Second"))
    client = await make_client()
    await sign_in(client)
    html = await (await client.get("/stream")).text()
    assert html.index("Second") < html.index("First")  # newest first
    assert 'data-newest="2"' in html
    nothing = await client.get("/stream/fragment?after=2")
    assert (await nothing.text()).strip() == "" and nothing.headers["X-Newest"] == "2"
    await ingest(store, post(3, "Third"))
    fresh = await client.get("/stream/fragment?after=2")
    text = await fresh.text()
    assert "Third" in text and "Second" not in text and 'data-number="3"' in text
    assert fresh.headers["X-Newest"] == "3"


# --- subscriptions and deliveries ----------------------------------------------------------------


async def test_subscriptions_pause_resume_and_send_a_test(
    store: Store, make_client: ClientFactory
) -> None:
    sub, _ = await store.subscriptions.add(
        Target(platform="slack", address=HOOK, kind="webhook"),
        created_by="test",
        query="ferry",
    )
    sends = SendTests()
    client = await make_client(dashboard_app(store, send_test=sends))
    csrf = await sign_in(client)
    html = await (await client.get("/subscriptions")).text()
    assert "Slack-style webhooks" in html and "ferry" in html
    assert "abcdefghijklmnopqrstuvwx" not in html and "https://hooks.slack.com/…/uvwx" in html

    html = await (await client.post(f"/subscriptions/{sub.id}/pause", data={"csrf": csrf})).text()
    assert (await store.subscriptions.get(sub.id)).state == SubscriptionState.PAUSED  # type: ignore[union-attr]
    assert "paused from the dashboard" in html
    html = await (await client.post(f"/subscriptions/{sub.id}/resume", data={"csrf": csrf})).text()
    assert (await store.subscriptions.get(sub.id)).state == SubscriptionState.ACTIVE  # type: ignore[union-attr]

    html = await (await client.post(f"/subscriptions/{sub.id}/test", data={"csrf": csrf})).text()
    assert sends.sent == [sub.id]
    assert f"a test message went to subscription #{sub.id}" in html
    sends.failure = PermanentError("404 channel_not_found from https://hooks.slack.com/…/uvwx")
    html = await (await client.post(f"/subscriptions/{sub.id}/test", data={"csrf": csrf})).text()
    assert "the test was not delivered: 404 channel_not_found" in html
    sends.failure = RuntimeError("boom")
    html = await (await client.post(f"/subscriptions/{sub.id}/test", data={"csrf": csrf})).text()
    assert "the test failed; the log says why" in html and "boom" not in html
    html = await (await client.post("/subscriptions/77/test", data={"csrf": csrf})).text()
    assert "No subscription #77." in html


async def test_dead_deliveries_are_listed_with_reasons_and_retried(
    store: Store, make_client: ClientFactory
) -> None:
    await store.subscriptions.add(
        Target(platform="slack", address=HOOK, kind="webhook"), created_by="test"
    )
    await ingest(store, post(1, "Ferry <suspended>"), post(2, "Harbour"), post(3, "Pier"))
    first, second, _third = await store.outbox.pending_after(0)
    await store.outbox.record(
        OutboxResults(
            dead=[(first.id, 8, "HTTP 500 <b>bad gateway</b>"), (second.id, 8, "410 gone")]
        )
    )
    client = await make_client()
    csrf = await sign_in(client)
    html = await (await client.get("/deliveries")).text()
    assert '<span class="figure" id="pending">1</span>' in html
    assert '<span class="figure" id="dead">2</span>' in html
    assert "HTTP 500 &lt;b&gt;bad gateway&lt;/b&gt;" in html and "410 gone" in html
    assert "Ferry &lt;suspended&gt;" in html
    assert "abcdefghijklmnopqrstuvwx" not in html

    html = await (
        await client.post("/deliveries/retry", data={"csrf": csrf, "id": str(first.id)})
    ).text()
    assert "1 delivery back in the queue." in html
    assert '<span class="figure" id="pending">2</span>' in html
    html = await (
        await client.post("/deliveries/retry", data={"csrf": csrf, "id": str(first.id)})
    ).text()
    assert "Nothing to retry" in html
    html = await (await client.post("/deliveries/retry", data={"csrf": csrf, "all": "1"})).text()
    assert "1 delivery back in the queue." in html and "None: every delivery" in html
    assert (await store.outbox.counts())["pending"] == 3


async def test_search_pages_through_the_hits(store: Store, make_client: ClientFactory) -> None:
    await ingest(store, *(post(n, f"Ferry update {n}") for n in range(1, 13)))
    client = await make_client()
    await sign_in(client)
    first = await (await client.get("/search?q=ferry")).text()
    assert first.count('class="hit"') == dashboard.SEARCH_PER_PAGE
    assert "12 posts match" in first and 'href="/search?q=ferry&amp;page=2"' in first
    second = await (await client.get("/search?q=ferry&page=2")).text()
    assert second.count('class="hit"') == 2
    assert "More hits" not in second and 'href="/search?q=ferry&amp;page=1"' in second


async def test_a_store_that_fails_is_one_line_not_a_traceback(
    store: Store, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client()
    csrf = await sign_in(client)
    await store.close()  # the database is gone from under the running dashboard
    for answer in (
        await client.get("/stream"),
        await client.post("/deliveries/retry", data={"csrf": csrf, "all": "1"}),
    ):
        assert answer.status == 500 and answer.content_type == "text/html"
        html = await answer.text()
        assert "The store did not answer as expected" in html and "Traceback" not in html
    assert "dashboard: GET /stream failed" in caplog.text  # the log has the details
