"""The documentation site: it builds with warnings as errors (mkdocs --strict), it is
self-contained (MathJax ships with it, nothing is loaded from another host), its docstring
cross-references are links, and in a real browser (headless Chromium) every formula of
every tutorial page is typeset.

The browser check saves one screenshot per page under ``.ci-artifacts/docs-screenshots/``
(ignored by git; CI keeps the folder as an artefact). It is skipped, saying so, only when no
Chromium is installed (``.ci/run`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("*.ipynb"))
SCREENSHOTS = ROOT / ".ci-artifacts" / "docs-screenshots"
ROLE = re.compile(r":(?:py:)?(func|mod|class|meth|data|attr|exc|obj|const):`")


def _mkdocs(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    return subprocess.run([sys.executable, "-m", "mkdocs", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once for this module with ``mkdocs build --strict``."""
    out_dir = tmp_path_factory.mktemp("docs") / "site"
    out = _mkdocs(["build", "--strict", "--site-dir", str(out_dir)])
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out_dir


def test_docs_build_strict(site):
    assert (site / "index.html").is_file()
    for path in TUTORIALS:
        assert (site / "tutorials" / path.stem / "index.html").is_file(), path.name


# ---------------------------------------------------------------- offline, self-contained
def test_site_loads_nothing_from_other_hosts(site):
    """Scripts, stylesheets, fonts and images all come from the site itself."""
    remote = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=["'](?:https?:)?//""")
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 10
    for page in pages:
        hits = remote.findall(page.read_text(encoding="utf-8"))
        assert not hits, f"{page.relative_to(site)} loads from another host: {hits[:3]}"


def test_mathjax_ships_with_the_site(site):
    mathjax = site / "assets" / "mathjax"
    assert (mathjax / "tex-mml-chtml.js").stat().st_size > 500_000
    assert list((mathjax / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert (mathjax / "input" / "tex" / "extensions" / "boldsymbol.js").is_file()  # autoload
    for path in TUTORIALS:
        html = (site / "tutorials" / path.stem / "index.html").read_text(encoding="utf-8")
        assert 'src="../../assets/mathjax/tex-mml-chtml.js"' in html, path.name
        assert 'src="../../javascripts/mathjax.js"' in html, path.name


# ---------------------------------------------------------------- cross-references
def test_no_sphinx_roles_in_docstrings():
    """mkdocstrings prints ``:func:`x``` literally; references are autorefs links
    (``[`x`][probgen.module.x]``). /work/notes/convert_xrefs.py converts new ones."""
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
             for p in sorted((ROOT / "probgen").rglob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1) if ROLE.search(line)]
    assert not found, "Sphinx roles left:\n" + "\n".join(found[:20])


def _section(html: str, anchor: str) -> str:
    """The HTML of one rendered module: from its heading to the next module's."""
    start = html.index(f'id="{anchor}"')
    nxt = re.compile(r'<h2 id="probgen\.[\w.]+"').search(html, start + 1)
    return html[start:nxt.start() if nxt else len(html)]


@pytest.mark.parametrize("module, targets", [
    ("probgen.infer.fit", ["probgen.infer.runs", "probgen.infer.objectives.Objective"]),
    ("probgen.infer.runs", ["probgen.infer.fit.fit"]),
    ("probgen.infer.objectives", ["probgen.infer.fit.fit", "probgen.infer.objectives.ELBO"]),
])
def test_engine_pages_link_to_each_other(site, module, targets):
    html = (site / "api" / "infer" / "index.html").read_text(encoding="utf-8")
    section = _section(html, module)
    links = set(re.findall(r'<a class="autorefs autorefs-internal"[^>]*href="#([\w.-]+)"',
                           section))
    for target in targets:
        assert target in links, f"{module} does not link to {target}: {sorted(links)[:20]}"
    assert not ROLE.search(section)


def test_broken_cross_reference_fails_strict(tmp_path):
    """A site that renders fit but not runs/objectives: fit's docstring references are then
    broken, and --strict (this repo's configuration) must refuse the build."""
    yaml = pytest.importorskip("yaml")
    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# fit alone\n\n::: probgen.infer.fit\n")
    cfg.update(docs_dir=str(tmp_path / "docs"), nav=["index.md"],
               hooks=[str(ROOT / h) for h in cfg.get("hooks", [])])
    for plugin in cfg["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            plugin["mkdocstrings"]["handlers"]["python"]["paths"] = [str(ROOT)]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(cfg))
    out = _mkdocs(["build", "--strict", "-f", str(tmp_path / "mkdocs.yml"),
                   "--site-dir", str(tmp_path / "site")])
    log = out.stdout + out.stderr
    assert out.returncode != 0, log[-3000:]
    assert "Could not find cross-reference target 'probgen.infer.runs'" in log, log[-3000:]


# ---------------------------------------------------------------- a real browser
def _chromium() -> str | None:
    for name in (os.environ.get("PROBGEN_CHROMIUM"), "chromium", "chromium-browser",
                 "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class _Page(HTMLParser):
    """Counts typeset formulas and MathJax errors; keeps the text a reader sees outside
    code, scripts and typeset math (where raw TeX must not be left)."""

    SKIP = {"pre", "code", "script", "style", "textarea", "mjx-container", "svg", "math"}

    def __init__(self) -> None:
        super().__init__()
        self.formulas = self.errors = 0
        self.skip: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "mjx-container":
            self.formulas += not self.skip
        if tag == "mjx-merror" or any(k == "data-mjx-error" for k, _ in attrs):
            self.errors += 1
        if tag in self.SKIP:
            self.skip.append(tag)

    def handle_endtag(self, tag):
        if self.skip and self.skip[-1] == tag:
            self.skip.pop()

    def handle_data(self, data):
        if not self.skip:
            self.text.append(data)


CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)
MATH = re.compile(r"\$\$.+?\$\$|(?<![\\$])\$(?!\$)[^$\n]+?(?<![\\$])\$", re.S)
RAW_TEX = re.compile(r"\$\$|\\\(|\\\[|(?<![\\$])\$(?!\s)[^$\n]{1,80}(?<![\s\\])\$")


def _formulas_in(page: Path) -> int:
    """Formulas written in a page's source (notebook Markdown cells or a Markdown file)."""
    if page.suffix == ".ipynb":
        cells = json.loads(page.read_text(encoding="utf-8"))["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    else:
        text = page.read_text(encoding="utf-8")
    return len(MATH.findall(CODE.sub("", text)))


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


PAGES = [("index", ROOT / "docs" / "index.md", "")] + [
    (p.stem, p, f"tutorials/{p.stem}/") for p in TUTORIALS]


@pytest.mark.parametrize("name, source, url", PAGES, ids=[p[0] for p in PAGES])
def test_math_renders_in_headless_chromium(server, tmp_path, name, source, url):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium found (Debian: apt-get install -y chromium; or set "
                    "PROBGEN_CHROMIUM): the real-browser check of the docs did not run")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / f"{name}.png"
    shot.unlink(missing_ok=True)
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=30000",
           "--window-size=1280,2000", f"--screenshot={shot}", "--dump-dom",
           f"{server}/{url}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    page = _Page()
    page.feed(out.stdout)
    expected = _formulas_in(source)
    assert expected > 0, f"{source.name} has no formula: nothing to check"
    assert page.formulas >= expected, (
        f"{name}: {page.formulas} typeset formulas, {expected} in the source")
    assert page.errors == 0, f"{name}: {page.errors} MathJax errors"
    raw = RAW_TEX.findall("".join(page.text))
    assert not raw, f"{name}: raw TeX left outside code: {raw[:5]}"
    assert shot.is_file() and shot.stat().st_size > 10_000, f"no screenshot of {name}"
