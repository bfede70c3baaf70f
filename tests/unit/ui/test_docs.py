"""The documentation site: it builds with ``mkdocs build --strict`` (every relative link and
anchor between pages resolves, the CLI and settings references are generated from the code),
no link or image in the built site or the README points at nothing, and the benchmarks' result
blocks each have exactly one home."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[3]
# The theme's and MkDocs' notices about their own futures, not about these docs.
QUIET = {"DISABLE_MKDOCS_2_WARNING": "true", "NO_MKDOCS_2_WARNING": "1"}


class _Links(HTMLParser):
    """Every href and src of a page, and every id it defines."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("href", "src"):
                self.links.append(value)
            elif name in ("id", "name"):
                self.ids.add(value)


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def broken_links(site: Path) -> list[str]:
    """Links and images of the built site that point at no file, or at no anchor of the page
    they name (links elsewhere on the web are not fetched: the tests reach no network)."""
    pages = {p: _parse(p) for p in site.rglob("*.html")}
    broken = []
    for page, parsed in pages.items():
        for link in parsed.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("data:", "mailto:")):
                continue
            if not parts.path:
                target = page
            else:
                # Root-relative (the 404 page's) as the site is served: from its root.
                base = site if parts.path.startswith("/") else page.parent
                target = (base / unquote(parts.path).lstrip("/")).resolve()
                if target.is_dir():
                    target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: {link} (no such file)")
                continue
            anchor = unquote(parts.fragment)
            if anchor and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if anchor not in ids:
                    broken.append(f"{page.relative_to(site)}: {link} (no such anchor)")
    return broken


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", "mkdocs.yml", "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **QUIET},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert not re.search(r"^WARNING\s+-", proc.stderr, re.M), proc.stderr[-5000:]
    return out


@pytest.mark.slow
def test_the_site_builds_strict_with_no_broken_link(site: Path) -> None:
    assert (site / "index.html").exists()
    assert broken_links(site) == []


@pytest.mark.slow
def test_the_references_are_generated_from_the_code(site: Path) -> None:
    import typer

    from shopml.cli import app
    from shopml.settings import Settings

    cli = (site / "reference" / "cli" / "index.html").read_text()
    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="shopml")
    for name in root.list_commands(ctx):  # type: ignore[attr-defined]
        command = root.get_command(ctx, name)  # type: ignore[attr-defined]
        if hasattr(command, "list_commands"):
            sub = command.context_class(command, info_name=name, parent=ctx)
            names = [f"shopml {name} {s}" for s in command.list_commands(sub)]
        else:
            names = [f"shopml {name}"]
        for full in names:
            assert f"<code>{full}</code>" in cli, full
    assert "--screenshots" in cli  # options too, with their help
    settings = (site / "reference" / "settings" / "index.html").read_text()
    for field in Settings.model_fields:
        assert f"<code>SHOPML_{field.upper()}</code>" in settings, field


def test_readme_links_point_at_files_of_the_project() -> None:
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'src="([^"]+)"', text)
    local = [t for t in targets if not urlsplit(t).scheme and not t.startswith("#")]
    missing = [t for t in local if not (ROOT / unquote(urlsplit(t).path)).exists()]
    assert missing == []


def test_every_benchmark_block_has_one_home() -> None:
    """``benchmarks.common.update_readme`` rewrites the block between a benchmark's markers
    wherever it is (README or a docs page): each marker pair is in one place at most, whole."""
    from benchmarks.common import DOC_FILES

    names = [p.stem.removeprefix("bench_") for p in (ROOT / "benchmarks").glob("bench_*.py")]
    names += [p.stem for p in (ROOT / "benchmarks").glob("real_*.py")]
    texts = [p.read_text() for p in DOC_FILES()]
    for name in names:
        opening = sum(t.count(f"<!-- bench:{name} -->") for t in texts)
        closing = sum(t.count(f"<!-- /bench:{name} -->") for t in texts)
        assert opening <= 1 and opening == closing, name


def test_broken_links_are_found(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="a/">ok</a><a href="b/">gone</a><a href="a/#here">ok</a>'
        '<a href="a/#nowhere">no anchor</a><img src="x.png"><a href="https://example.org/">web</a>'
    )
    (tmp_path / "a" / "index.html").write_text('<h2 id="here">h</h2><a href="../">up</a>')
    assert broken_links(tmp_path) == [
        "index.html: b/ (no such file)",
        "index.html: a/#nowhere (no such anchor)",
        "index.html: x.png (no such file)",
    ]
