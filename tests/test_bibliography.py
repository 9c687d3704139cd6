"""The bibliography holds what the book cites, each entry typed as what it is."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIB = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
ENTRIES = dict((key, (kind.lower(), body)) for kind, key, body in
               re.findall(r"@(\w+)\{([^,\s]+),(.*?)\n\}", BIB, flags=re.DOTALL))
CITE = re.compile(r"\{(?:cite|cite:[a-z]+)\}`([^`]+)`")


def cited_keys() -> set[str]:
    sources = [*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("book/*.md")]
    text = "".join(path.read_text(encoding="utf-8").replace("\\n", " ") for path in sources)
    return {key.strip() for group in CITE.findall(text) for key in group.split(",")}


def test_the_bibliography_parses():
    assert len(ENTRIES) >= 80 and len(ENTRIES) == BIB.count("\n@") + BIB.startswith("@")


def test_every_entry_is_cited_and_every_citation_has_an_entry():
    cited = cited_keys()
    assert not sorted(set(ENTRIES) - cited), f"entries nothing cites: {sorted(set(ENTRIES) - cited)}"
    assert not sorted(cited - set(ENTRIES)), f"citations without an entry: {sorted(cited - set(ENTRIES))}"


def test_conference_papers_are_inproceedings():
    for key, (kind, body) in ENTRIES.items():
        venue = re.search(r"journal\s*=\s*\{(.*?)\},?\n", body)
        if venue and re.search(r"Conference|Proceedings of the \d|Workshop|Symposium", venue.group(1)):
            raise AssertionError(f"{key}: a conference paper ({venue.group(1)}) must be @inproceedings, not @{kind}")


def test_published_versions_replace_preprints():
    assert ENTRIES["kohlbrenner2020towards"][0] == "inproceedings"
    kind, body = ENTRIES["krishna2022disagreement"]
    assert "Transactions on Machine Learning Research" in body and "2024" in body
