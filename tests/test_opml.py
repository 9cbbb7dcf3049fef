"""OPML as feed readers write it: 1.0 and 2.0, folders, broken outlines, hostile XML, and our export."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot import opml
from storage.values import Feed

ADDED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

OPML_1 = """<?xml version="1.0" encoding="ISO-8859-1"?>
<opml version="1.0">
  <head><title>mySubscriptions</title></head>
  <body>
    <outline text="CNN Top Stories" type="rss" xmlUrl="http://rss.cnn.com/rss/cnn_topstories.rss"/>
    <outline title="Ukraine live" type="rss" xmlUrl="https://example.org/live/ukraine.xml"/>
  </body>
</opml>
"""

OPML_2_FOLDERS = """<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0">
  <head><title>Feeds</title><dateCreated>Sun, 01 Mar 2026 12:00:00 GMT</dateCreated></head>
  <body>
    <outline text="News">
      <outline text="World">
        <outline type="rss" text="Kyiv Independent" xmlUrl="https://kyivindependent.example/feed"/>
      </outline>
      <outline type="atom" text="Local" xmlURL="https://local.example/atom.xml"/>
    </outline>
    <outline text="A note, not a feed" type="link" url="https://example.org/about"/>
    <outline type="rss" text="No address"/>
    <outline type="rss" text="Shell" xmlUrl="javascript:alert(1)"/>
    <outline type="rss" text="Mail" xmlUrl="mailto:desk@example.org"/>
    <outline type="rss" text="Tokened" xmlUrl="ftp://files.example/feed?token=s3cr3tvalue"/>
    <outline type="rss" xmlUrl="https://untitled.example/feed.json"/>
  </body>
</opml>
"""


def test_an_opml_1_document_gives_its_feeds_with_their_titles() -> None:
    document = opml.parse(OPML_1.encode("iso-8859-1"))
    assert [(o.location, o.title) for o in document.outlines] == [
        ("http://rss.cnn.com/rss/cnn_topstories.rss", "CNN Top Stories"),
        ("https://example.org/live/ukraine.xml", "Ukraine live"),
    ]
    assert document.skipped == ()


def test_folders_are_walked_and_bad_outlines_are_skipped_with_one_line_each() -> None:
    document = opml.parse(OPML_2_FOLDERS)
    assert [(o.location, o.folder) for o in document.outlines] == [
        ("https://kyivindependent.example/feed", ("News", "World")),
        ("https://local.example/atom.xml", ("News",)),
        ("https://untitled.example/feed.json", ()),
    ]
    assert document.outlines[2].title is None
    assert document.skipped == (
        'outline "No address": skipped, it has no xmlUrl',
        'outline "Shell": skipped, "javascript:alert(1)" is not an http(s) or file URL',
        'outline "Mail": skipped, "mailto:desk@example.org" is not an http(s) or file URL',
        'outline "Tokened": skipped, "ftp://files.example/feed?token=[secret]" is not an http(s) '
        "or file URL",
    )
    assert all("\n" not in line for line in document.skipped)


@pytest.mark.parametrize(
    ("document", "says"),
    [
        pytest.param(
            '<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
            '<opml version="2.0"><body><outline text="&c;" xmlUrl="https://x.example/"/></body></opml>',
            "refused: it declares entities",
            id="billion-laughs",
        ),
        pytest.param(
            '<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
            '<opml version="2.0"><body><outline text="&secret;" xmlUrl="https://x.example/"/>'
            "</body></opml>",
            "refused: it declares entities",
            id="external-entity",
        ),
        pytest.param("<opml><body><outline", "not well-formed XML", id="truncated"),
        pytest.param("<rss version='2.0'><channel/></rss>", "root element is <rss>", id="rss"),
        pytest.param("<opml version='2.0'><head/></opml>", "has no <body>", id="no-body"),
        pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00", "not well-formed XML", id="binary"),
    ],
)
def test_a_document_that_is_no_safe_opml_is_one_line(document: str | bytes, says: str) -> None:
    with pytest.raises(opml.OpmlError) as raised:
        opml.parse(document, name="feeds.opml")
    message = str(raised.value)
    assert message.startswith("feeds.opml ")
    assert says in message
    assert "\n" not in message
    assert "root:" not in message  # no file's content leaked through an entity


def test_a_missing_or_huge_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(opml.OpmlError, match=r"cannot read .*missing\.opml"):
        opml.read(tmp_path / "missing.opml")
    huge = tmp_path / "huge.opml"
    huge.write_bytes(b" " * (opml.MAX_BYTES + 1))
    with pytest.raises(opml.OpmlError, match="larger than 16 MB"):
        opml.read(huge)


def _feed(n: int, location: str, **changes: object) -> Feed:
    values: dict[str, object] = {
        "id": n,
        "location": location,
        "interval": 60.0,
        "enabled": True,
        "origin": "cli",
        "added_at": ADDED,
    }
    values.update(changes)
    return Feed(**values)  # type: ignore[arg-type]


def test_the_export_is_opml_2_that_imports_back_the_same_feeds(tmp_path: Path) -> None:
    blog = tmp_path / "blogs" / "the desk's blog & more.txt"
    feeds = [
        _feed(1, "https://example.org/live/feed.xml?edition=uk&page=1", title="Live <UK> & more"),
        _feed(2, str(blog), interval=15.0, enabled=False),
        _feed(3, "https://example.org/other", title=None, interval=3600.0),
    ]
    text = opml.render(feeds, now=ADDED)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0">')
    assert "<dateCreated>Sun, 01 Mar 2026 12:00:00 GMT</dateCreated>" in text
    assert "Live &lt;UK&gt; &amp; more" in text
    assert blog.as_uri() in text

    document = opml.parse(text.encode("utf-8"))
    assert document.skipped == ()
    assert [(o.location, o.title, o.interval, o.paused) for o in document.outlines] == [
        (feeds[0].location, "Live <UK> & more", 60.0, False),
        (str(blog), str(blog), 15.0, True),
        ("https://example.org/other", "https://example.org/other", 3600.0, False),
    ]
