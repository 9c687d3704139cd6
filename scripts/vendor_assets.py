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
# which offline readers cannot load and which the system fonts replace.
widgets = modules / "@jupyter-widgets" / "html-manager" / "dist"
for path in widgets.iterdir():
    if path.suffix in {".js", ".woff", ".woff2", ".ttf", ".eot", ".svg"} and not path.name.startswith("embed.js"):
        shutil.copy(path, out / path.name)
code = (out / "embed-amd.js").read_text(encoding="utf-8")
code, n = re.subn(r"@import url\((?:\\?[\"'])?https://fonts\.googleapis\.com/css[^)]*\);?", "", code)
(out / "embed-amd.js").write_text(code, encoding="utf-8")
print(f"vendored into {out.relative_to(root)} (removed {n} remote font import(s))")
