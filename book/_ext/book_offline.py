"""Small Sphinx fixes that keep the built book clean in a browser without network.

* sphinx-thebe registers its configuration script once per read phase, so a full build can
  declare ``const THEBE_JS_URL`` twice on a page, which is a JavaScript error in every browser.
  Scripts registered twice (same file, or the same inline body) are written once.
"""


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = (str(getattr(script, "filename", script) or ""), tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _dedupe_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
