"""The documentation: the site builds with ``mkdocs build --strict`` (every page in the nav, every
link and every API docstring resolving), the nav and docs/ agree, every Python block in the
pages and the README runs, every ``vaalloc`` command line they show parses, and what the README
and docs/design.md say about the code is true of the code.

Issue 13, item 10: the design document is in the repository and everything points at it; the
README says how to build the docs and how to install the extras from a checkout; the layers
import only those *below* them, in the README and in ``vaalloc/__init__.py`` alike."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import vaalloc
import vaalloc.cli as cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = sorted(DOCS.rglob("*.md"))


def _nav_pages() -> list[str]:
    config = (ROOT / "mkdocs.yml").read_text()
    nav = config[config.index("\nnav:") :]
    return re.findall(r":\s*([\w/.-]+\.md)\s*$", nav, flags=re.MULTILINE)


def test_nav_lists_exactly_the_pages_in_docs() -> None:
    pages = _nav_pages()
    on_disk = sorted(str(p.relative_to(DOCS)) for p in PAGES)
    assert sorted(pages) == on_disk
    assert len(pages) == len(set(pages))
    assert "design.md" in pages and "command.md" in pages


def test_changelog_page_includes_the_changelog() -> None:
    assert '--8<-- "CHANGELOG.md"' in (DOCS / "changelog.md").read_text()
    assert (ROOT / "CHANGELOG.md").exists()


# --- every Python block runs --------------------------------------------------------------
def _blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


# docs/testing.md's ctypes example needs the C library built first:
# tests/testing/test_docs_testing.py builds it and runs that block as the pytest file it is.
NEEDS_A_BUILD = ("class CVmapMachine",)
WITH_BLOCKS = [p for p in [*PAGES, README] if _blocks(p)]


@pytest.mark.parametrize("page", WITH_BLOCKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_block_runs(page: Path) -> None:
    ran = 0
    for block in _blocks(page):
        if any(marker in block for marker in NEEDS_A_BUILD):
            continue
        scope: dict[str, object] = {"__name__": "docs"}
        exec(compile(block, str(page.relative_to(ROOT)), "exec"), scope)
        for name, value in scope.items():  # a block that defines a test: run it too
            if name.startswith("test_") and callable(value):
                value()
        ran += 1
    assert ran


def test_no_block_is_pseudo_code() -> None:
    for page in WITH_BLOCKS:
        for block in _blocks(page):
            assert not re.search(r"\[\w+, \.\.\.\]|\(\w+, \.\.\.\)", block), page
            assert not re.search(r"^\s*\.\.\.\s*(#.*)?$", block, flags=re.MULTILINE), page


def test_the_design_s_conformance_block_is_the_surface(tmp_path: Path) -> None:
    design = (DOCS / "design.md").read_text()
    (block,) = [b for b in _blocks(DOCS / "design.md") if "RangeAllocator.xen_vmap" in b]
    for name in (
        "RangeAllocator(",
        ".alloc(",
        ".free(",
        ".size(",
        ".stats()",
        ".check()",
        ".carve(",
        ".release()",
        "xen_vmap(",
        "PhysicalMemory(pa_bits=40)",
        "PageTable(mem, ARMV7_S1)",
        "root=pt.root",
        ".map(",
        ".walk(",
        "Translation",
        "Fault",
        ".read64(",
        ".write64(",
        ".frames()",
        "ARMV7_S2_40",
        "AARCH64_S1_48",
        "Xen(cpus=2)",
        "create_domain(ram=",
        "logdirty.enable(d)",
        "vlpt.third_va(d, ipa)",
        "vlpt.second_va(d, ipa)",
        "guest_write(d, ipa, cpu=0)",
        "logdirty.peek(d, clean=True)",
        "context_switch(",
        'ledger.counts["xen_second_writes"]',
        "xen.mem",
        "xen.httbr(",
        "d.p2m.root",
    ):
        assert name in block, name
    for kind in ("translation", "access-flag", "permission", "address-size"):
        assert f'`"{kind}"`' in design


# --- the design document is where every reference points -------------------------------------


def test_every_reference_to_a_design_document_is_docs_design_md() -> None:
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    stale = set()
    for name in files:
        path = ROOT / name
        if path.suffix not in (".py", ".md", ".c", ".toml", ".yml") or not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if re.search(r"(?<!docs/)(?<![\w/])DESIGN\.md", line):
                stale.add(name)
    assert not stale, sorted(stale)
    assert (DOCS / "design.md").exists()
    assert "docs/design.md" in vaalloc.__doc__  # type: ignore[operator]


# --- every command line in the docs parses --------------------------------------------------
def _shell_blocks(text: str) -> list[str]:
    """The fenced blocks of a Markdown page that hold shell commands (sh, or no language)."""
    blocks, current, lang = [], [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, current = line[3:].strip(), []
            else:
                if lang in ("sh", "", "console"):
                    blocks.append("\n".join(current))
                lang = None
        elif lang is not None:
            current.append(line)
    return blocks


def _command_lines() -> list[tuple[str, str]]:
    found = []
    for page in [*PAGES, README, ROOT / "examples" / "c_port" / "README.md"]:
        for block in _shell_blocks(page.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                command = line.split("#")[0].strip()
                if command.startswith("vaalloc ") or " && vaalloc " in command:
                    found.append((page.name, command[command.index("vaalloc ") :]))
    return found


def test_every_command_line_in_the_docs_parses() -> None:
    lines = _command_lines()
    assert len(lines) > 20
    parser = cli._parser()
    for page, line in lines:
        argv = shlex.split(line)[1:]
        try:
            parser.parse_args(argv)
        except SystemExit as exc:  # argparse refused it
            raise AssertionError(f"{page}: {line!r} does not parse") from exc


# --- the README --------------------------------------------------------------------------
def test_readme_says_how_to_build_and_serve_the_docs() -> None:
    text = README.read_text()
    assert "python3 -m mkdocs build --strict" in text
    assert "python3 -m mkdocs serve" in text


def test_readme_installs_every_extra_from_a_checkout() -> None:
    text = README.read_text()
    for extra in _extras():
        assert f"python3 -m pip install -e '.[{extra}]'" in text, extra
    # The package index form only with the word that it needs a release first.
    for line in text.splitlines():
        if re.search(r"pip install 'vaalloc\[", line):
            assert "Once vaalloc is on a package index" in line or "index" in line, line


def test_readme_keeps_the_commands_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    text = README.read_text()
    assert "python3 -m pip install -e '.[test]' && python3 -m pytest -n 2 -q" in text
    assert "python3 -m pip install -q -e '.[test]'" in ci and "python3 -m pytest -n 2 -q" in ci


# pyproject.toml read with plain text matching (tomllib needs Python 3.11; vaalloc runs on 3.10).
PYPROJECT = (ROOT / "pyproject.toml").read_text()


def _extras() -> list[str]:
    section = PYPROJECT[PYPROJECT.index("[project.optional-dependencies]") :]
    section = section[: section.index("\n[", 1)]
    return re.findall(r"^([\w-]+) = \[", section, flags=re.MULTILINE)


def _package_layers() -> list[str]:
    """The first import-linter contract's layers, top first."""
    contract = PYPROJECT[PYPROJECT.index("[[tool.importlinter.contracts]]") :]
    body = contract[contract.index("layers = [") :]
    body = body[: body.index("\n]")]
    return re.findall(r'"([^"]+)"', body)


def _layers(text: str) -> list[str]:
    return re.findall(r"`(vaalloc\.\w+)`", text)


def test_readme_and_the_package_agree_each_layer_imports_those_below_it() -> None:
    readme = README.read_text()
    table = readme[readme.index("## Layout of the code") :]
    table = table[: table.index("## Development")]
    assert "imports only the layers below it" in table and "above it" in table
    assert "imports only those below it" in (vaalloc.__doc__ or "")
    package = _layers((vaalloc.__doc__ or "").replace(":mod:", ""))
    assert _layers(table.split("Each layer")[0]) == package
    flat = [name.strip() for group in reversed(_package_layers()) for name in group.split("|")]
    assert flat == package  # the order lint-imports checks


def test_python_dash_m_vaalloc_is_documented_and_works() -> None:
    assert "python3 -m vaalloc" in README.read_text()
    proc = subprocess.run(
        [sys.executable, "-m", "vaalloc", "--version"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout.strip() == f"vaalloc {vaalloc.__version__}"


# --- the site ----------------------------------------------------------------------------
def test_site_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    site = tmp_path / "site"
    assert (site / "porting" / "index.html").exists()
    assert (site / "design" / "index.html").exists()
    api = (site / "api" / "xen" / "index.html").read_text()
    assert "third_va" in api  # docstrings were rendered, not just the page titles
    changelog = (site / "changelog" / "index.html").read_text()
    assert "Keep a Changelog" in changelog
