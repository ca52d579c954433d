// MathJax 3 configuration for the site; MathJax itself is served from assets/mathjax/
// (copied from a pip package by docs/hooks/offline_math.py: no CDN, works offline).
//
// Markdown pages and docstrings: pymdownx.arithmatex (generic mode) wraps each formula in
// <span|div class="arithmatex"> with \( \) or \[ \] delimiters.
// Notebooks (mkdocs-jupyter): markdown cells keep their $...$ and $$...$$; they are rendered
// inside .jp-RenderedMarkdown (and LaTeX outputs inside .jp-RenderedLatex).
// Only those containers are typeset, so a dollar sign in code, an output table or plain text
// elsewhere is never mistaken for math; <pre> and <code> are skipped inside them too.
window.MathJax = {
  tex: {
    inlineMath: [["$", "$"], ["\\(", "\\)"]],
    displayMath: [["$$", "$$"], ["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: "tex2jax_ignore|mathjax_ignore",
  },
  startup: {
    elements: [".arithmatex", ".jp-RenderedMarkdown", ".jp-RenderedLatex"],
  },
};
