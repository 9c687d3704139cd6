"""Copy the JavaScript the book serves itself from book/vendor/node_modules into book/_vendor.

Run by `make vendor` after `npm ci`. Only what a page loads is copied: MathJax's TeX-to-HTML
bundle with its fonts and TeX extensions, require.js, and the Jupyter widgets HTML manager.
"""
import re
import shutil
from pathlib import Path

root = Path(__file__).resolve().parents[1]
modules = root / "book" / "vendor" / "node_modules"
out = root / "book" / "_vendor"

shutil.rmtree(out, ignore_errors=True)
(out / "mathjax").mkdir(parents=True)
mathjax = modules / "mathjax" / "es5"
shutil.copy(mathjax / "tex-chtml.js", out / "mathjax")
for sub in ("output/chtml/fonts", "input/tex/extensions", "ui", "a11y", "adaptors", "sre"):
    shutil.copytree(mathjax / sub, out / "mathjax" / sub)
shutil.copy(modules / "requirejs" / "require.js", out / "require.min.js")

# The widgets manager bundles the standard controls; its CSS pulls a web font from the network,
# which offline readers cannot load and which the system fonts replace. It finds its own icon
# fonts relative to its AMD module path, so the whole dist folder keeps that path under _static,
# and widgets-config.js points require.js there (pages live at different depths).
widgets = modules / "@jupyter-widgets" / "html-manager" / "dist"
dist = out / "@jupyter-widgets" / "html-manager" / "dist"
dist.mkdir(parents=True)
removed = 0
for path in widgets.iterdir():
    if path.suffix in {".woff", ".woff2", ".ttf", ".eot", ".svg"}:
        shutil.copy(path, dist / path.name)
    elif path.name in {"embed-amd.js", "libembed-amd.js"}:
        code, n = re.subn(r"@import url\((?:\\?[\"'])?https://fonts\.googleapis\.com/css[^)]*\);?", "",
                          path.read_text(encoding="utf-8"))
        removed += n
        (dist / path.name).write_text(code, encoding="utf-8")
shutil.copy(dist / "embed-amd.js", out / "embed-amd.js")
(out / "widgets-config.js").write_text(
    "// Written by scripts/vendor_assets.py: load the widgets manager from the book's own _static folder.\n"
    "(function () {\n"
    "  var root = document.documentElement.getAttribute('data-content_root') || './';\n"
    "  requirejs.config({baseUrl: new URL(root + '_static/', document.baseURI).href});\n"
    "})();\n", encoding="utf-8")
print(f"vendored into {out.relative_to(root)} (removed {removed} remote font import(s))")
