"""Importers: turn a live blog (page text, RSS/RDF/Atom, JSON Feed, LiveBlogPosting JSON-LD) into posts.

- `parse_document(data, location=..., content_type=...)`: pure and synchronous; detects the format.
- `await load(location, etag=..., last_modified=...)`: reads a file or fetches a URL (conditional GET);
  None when the server says nothing changed. `deferred=True` (for a result handed straight to the
  store, as `livedesk import` does): a plain RSS 2.0 feed's posts are read as the store writes them
  (`storage.models.DeferredImport`). Fetching loads aiohttp (`bot.sources.download`); a file does not.
- `SourceError`: a document or location that cannot be imported; its message is one readable line.

Source ids are the slug of the blog's title (`harbour-watch-live`). The store settles the final id
when it stores a document: a location or feed URL it knows keeps the id its blog has (so a retitled
blog stays one blog), and a new blog whose slug is taken gets `-2`, `-3`… Post ids are
`<source id>:<native id>` or, for posts without one, `<source id>:<published minute>-<n>`; see
`bot.sources.common`, which also holds the one rule for implausible dates (before 1900, more than a
day ahead: dated when first seen) and dates that overflow in UTC (their post is refused). Redirects
of fetched sources never reach an internal address unless the source itself is on one; see
`bot.sources.fetch`.

Size: a document up to `MAX_BYTES` (50 MB) is read whole; above it, a plain RSS 2.0 feed is read as
a stream from disk (`bot.sources.plain_rss`, a download going to a temporary file) up to
`MAX_STREAM_BYTES` (1 GB), and anything else is refused in one line.
"""

from bot.sources.common import SourceError
from bot.sources.detect import parse_document
from bot.sources.fetch import MAX_BYTES, MAX_STREAM_BYTES, FetchResult, load

__all__ = ["MAX_BYTES", "MAX_STREAM_BYTES", "FetchResult", "SourceError", "load", "parse_document"]
