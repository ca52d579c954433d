"""MkDocs hook: ship MathJax with the site, so formulas render with no network.

MathJax 3 comes from the PyPI package ``django-static-mathjax`` (MathJax 3.2.2 as plain static
files, no dependencies; installed by the ``docs`` and ``test`` extras; Django itself is not
needed). This hook adds the browser build (``es5/``) to the site as ``assets/mathjax/``:
the combined TeX + MathML -> CommonHTML component, its fonts, the TeX extensions it
autoloads, and the menu / accessibility parts it loads on demand. ``mkdocs.yml`` loads
``assets/mathjax/tex-mml-chtml.js`` after ``javascripts/mathjax.js`` (the configuration).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

DEST = "assets/mathjax"
# Other combined builds (SVG output, the full/speech bundles) and the node entry point are
# not used by the site; everything else under es5/ may be loaded by tex-mml-chtml.js.
SKIP_FILES = {
    "tex-chtml.js", "tex-chtml-full.js", "tex-chtml-full-speech.js", "tex-svg.js",
    "tex-svg-full.js", "tex-mml-svg.js", "mml-chtml.js", "mml-svg.js", "node-main.js",
}
SKIP_DIRS = {"output/svg"}


def mathjax_root() -> Path:
    """The installed MathJax distribution (the folder that holds ``es5/``)."""
    try:
        root = Path(str(resources.files("mathjax"))) / "static" / "mathjax"
    except ModuleNotFoundError:
        root = None
    if root is None or not (root / "es5" / "tex-mml-chtml.js").is_file():
        raise PluginError(
            "MathJax not found: install the docs extra (pip install -e '.[docs]'), which "
            "brings the package django-static-mathjax")
    return root


def on_files(files: Files, config) -> Files:
    root = mathjax_root()
    es5 = root / "es5"
    for path in sorted(es5.rglob("*")):
        rel = path.relative_to(es5).as_posix()
        if not path.is_file() or rel in SKIP_FILES or any(rel.startswith(d + "/")
                                                          for d in SKIP_DIRS):
            continue
        files.append(File.generated(config, f"{DEST}/{rel}", abs_src_path=str(path)))
    files.append(File.generated(config, f"{DEST}/LICENSE", abs_src_path=str(root / "LICENSE")))
    return files
