"""What the documentation names exists: README.md, docs/*.md and the model cards (bundles/*/docs/README.md).

- every relative link (``[text](target)``, images too) points to a file or folder, and its ``#anchor`` to a
  heading of the target;
- every repository path the text names (``common/...``, ``bundles/...``, ``benchmarks/...``, ``docs/...``,
  ``tests/...``, ``.ci/...``, ``configs/...``) exists, as does a ``lesionseg/...`` path, which must be
  written ``common/lesionseg/...``;
- every ``lesionseg <command>`` in code (inline or a code block) is a subcommand of the command line.

Paths that a run writes (a bundle's ``models/``, ``eval/``, ``easy_hard/``) are not checked. A model card
names its bundle's files relative to the bundle (``docs/data_license.txt``, ``configs/train.yaml``); the
project's pages name them relative to the repository or, for files every bundle has, to a bundle.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = sorted(path.parents[1] for path in (ROOT / "bundles").glob("*/configs/metadata.json"))
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *(b / "docs" / "README.md" for b in BUNDLES)]

#: a repository path: one of these folders, then path characters; not inside a longer path or a URL
REPOSITORY_PATH = re.compile(r"(?<![\w./-])((?:common|bundles|benchmarks|docs|tests|\.ci|configs|lesionseg)/[\w.*/-]*)")
#: what bundle runs write into a bundle folder, absent from a checkout
RUN_OUTPUTS = {"models", "eval", "easy_hard"}
#: [text](target) and ![alt](target); the target up to the closing parenthesis or a title
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*```")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
#: `lesionseg <command>`, also as .venv/bin/lesionseg
COMMAND = re.compile(r"(?:^|[\s/(])lesionseg[ \t]+([a-z][\w-]*)")


def _split_code(text: str) -> tuple[str, str]:
    """The text outside fenced code blocks, and the code: the blocks' lines and the inline code spans."""
    prose, code, in_block = [], [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_block = not in_block
        elif in_block:
            code.append(line)
        else:
            prose.append(line)
            code.extend(INLINE_CODE.findall(line))
    return "\n".join(prose), "\n".join(code)


def _anchors(markdown: Path) -> set[str]:
    """GitHub's anchors of the headings of ``markdown`` (lower case, punctuation dropped, spaces to hyphens)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in _split_code(markdown.read_text(encoding="utf-8"))[0].splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
            # a repeated heading gets -1, -2, ...
            anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _bases(document: Path) -> list[Path]:
    """Where the paths a document names may lie: its bundle first for a model card, else the repository."""
    for bundle in BUNDLES:
        if document.is_relative_to(bundle):
            return [bundle, ROOT]
    return [ROOT, *BUNDLES]


def broken_paths(document: Path, text: str) -> list[str]:
    """The repository paths named in ``text`` (of ``document``) that exist nowhere they may lie."""
    broken = []
    for path in sorted(set(REPOSITORY_PATH.findall(text))):
        path = path.split("*")[0].rstrip(".")  # a glob names its folder; a sentence's full stop is not the path's
        parts = Path(path).parts
        if parts[0] == "bundles" and len(parts) > 2 and parts[2] in RUN_OUTPUTS:
            continue
        if not any((base / path).exists() for base in _bases(document)):
            broken.append(path)
    return broken


def broken_links(document: Path, text: str) -> list[str]:
    """The relative links of ``text`` (of ``document``) whose file, folder or heading anchor does not exist."""
    broken = []
    for target in LINK.findall(_split_code(text)[0]):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(target)
    return broken


def mentioned_commands(text: str) -> set[str]:
    """The ``<command>`` of every ``lesionseg <command>`` in the code of ``text``."""
    return set(COMMAND.findall(_split_code(text)[1]))


def mentioned_options(text: str) -> set[tuple[str, str]]:
    """``(command, --option)`` for every option given to a ``lesionseg <command>`` in the code of ``text``
    (up to the end of the line, a shell line continuation joined, or the next ``&&``, ``|`` or ``;``)."""
    options = set()
    for line in _split_code(text)[1].replace("\\\n", " ").splitlines():
        for match in COMMAND.finditer(line):
            arguments = re.split(r"&&|\||;", line[match.end() :])[0]
            options |= {(match.group(1), option) for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", arguments)}
    return options


@pytest.fixture(scope="module")
def command_options() -> dict[str, set[str]]:
    """Each subcommand of the ``lesionseg`` command line and its option strings."""
    from lesionseg.cli import build_parser

    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return {
        name: {option for action in parser._actions for option in action.option_strings}
        for name, parser in actions[0].choices.items()
    }


@pytest.fixture(scope="module")
def subcommands(command_options) -> set[str]:
    return set(command_options)


def test_the_documents_are_found():
    names = [str(path.relative_to(ROOT)) for path in DOCUMENTS]
    assert "README.md" in names and "docs/security.md" in names and "docs/troubleshooting.md" in names
    assert "bundles/dcnet_bundle/docs/README.md" in names and "bundles/taichinet_bundle/docs/README.md" in names


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_named_paths_exist(document):
    assert not broken_paths(document, document.read_text(encoding="utf-8")), document


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve(document):
    assert not broken_links(document, document.read_text(encoding="utf-8")), document


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_lesionseg_commands_exist(document, subcommands):
    assert not mentioned_commands(document.read_text(encoding="utf-8")) - subcommands, document


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_lesionseg_options_exist(document, command_options):
    mentioned = mentioned_options(document.read_text(encoding="utf-8"))
    unknown = sorted(
        (command, option) for command, option in mentioned if option not in command_options.get(command, ())
    )
    assert not unknown, document


def test_the_checks_see_what_the_documents_name(subcommands):
    """The README names paths, links and commands, so the checks above have something to check."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert {"demo", "download", "check-data", "predict", "crossval", "export-bundle"} <= mentioned_commands(readme)
    assert {("download", "--root"), ("predict", "--bundle"), ("crossval", "--folds")} <= mentioned_options(readme)
    assert "common/lesionseg/networks/" in REPOSITORY_PATH.findall(readme)
    assert "docs/security.md" in LINK.findall(readme)


def test_the_checks_report_what_is_broken(subcommands):
    readme = ROOT / "README.md"
    text = (
        "See `lesionseg/metrics/per_image.py`, `common/lesionseg/metrics/per_image.py` and "
        "`bundles/dcnet_bundle/configs/trian.yaml`; logs in `bundles/dcnet_bundle/eval/`.\n"
        "[security](docs/security.md), [gone](docs/nowhere.md), [anchor](docs/security.md#no-such-heading), "
        "[site](https://monai.io)\n"
        "```bash\nlesionseg predict --help\nlesionseg extract archive.zip\n```\n"
    )
    assert broken_paths(readme, text) == [
        "bundles/dcnet_bundle/configs/trian.yaml",
        "docs/nowhere.md",  # a link's target is a named path too
        "lesionseg/metrics/per_image.py",
    ]
    assert broken_links(readme, text) == ["docs/nowhere.md", "docs/security.md#no-such-heading"]
    assert mentioned_commands(text) - subcommands == {"extract"}
    options = mentioned_options("`lesionseg predict --input a --ouptut b && lesionseg split --folds 5`")
    assert options == {("predict", "--input"), ("predict", "--ouptut"), ("split", "--folds")}
