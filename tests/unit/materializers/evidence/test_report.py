"""The HTML report: what it shows, and that it fetches nothing."""

from __future__ import annotations

from html.parser import HTMLParser

from tests.unit.materializers.evidence.conftest import h


class _Dom(HTMLParser):
    """Counts what the checks below look for."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tables: dict[str, int] = {}
        self.series: list[str] = []
        self.violation_marks = 0
        self.fetching: list[str] = []
        self.scripts = 0
        self.ids: dict[str, str] = {}
        self._text_of: str | None = None
        self._table: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            self.scripts += 1
        for attr in ("src", "href"):
            if attr in a:
                self.fetching.append(f"{tag} {attr}={a[attr]}")
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = 0
        if tag == "tr" and self._table and "tbody" in self.stack:
            self.tables[self._table] += 1
        if tag == "g" and a.get("class") == "series":
            self.series.append(a["data-key"])
        if tag == "path" and a.get("class") == "violation":
            self.violation_marks += 1
        if a.get("id"):
            self._text_of = a["id"]
            self.ids[a["id"]] = ""
        self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        while self.stack and self.stack.pop() != tag:
            pass

    def handle_data(self, data):
        if self._text_of:
            self.ids[self._text_of] += data
            self._text_of = None


def _dom(directory) -> _Dom:
    dom = _Dom()
    dom.feed((directory / "report.html").read_text("utf-8"))
    return dom


def test_report_shows_contract_violations_reads_and_one_series_per_key(make_export) -> None:
    dom = _dom(make_export().directory)
    assert dom.ids["contract-name"] == "quotes"
    assert dom.tables["violations"] == 1
    assert dom.tables["reads"] == 9
    # AAPL, MSFT, IBM have freshness proofs; the not_found key has none.
    assert sorted(dom.series) == sorted(h(k).hex() for k in ("AAPL", "MSFT", "IBM"))
    assert dom.violation_marks == 1
    assert dom.tables["key-events"] == 2
    assert dom.tables["contracts"] == 1
    assert dom.tables["reads-by-role"] == 3  # owner HIT, owner MISS, regulator HIT


def test_report_is_self_contained(make_export) -> None:
    directory = make_export().directory
    dom = _dom(directory)
    assert dom.fetching == [] and dom.scripts == 0
    text = (directory / "report.html").read_text("utf-8")
    assert "Content-Security-Policy" in text and "default-src 'none'" in text


def test_report_says_when_records_were_refused(make_export) -> None:
    clean = (make_export("a").directory / "report.html").read_text("utf-8")
    assert "every exported event verified" in clean
    refused = (make_export("b", refused=2).directory / "report.html").read_text("utf-8")
    assert "2 records refused" in refused and "leaf_mismatch" in refused
