"""The locked test environment (scripts/lock.py, requirements-lock.txt): the lock pins every
package that the ranges name, each within its range, and the diff names what moved."""
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from test_book_config import script

ROOT = Path(__file__).resolve().parents[1]
lock = script("lock")


def ranges():
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                yield Requirement(line)


def test_the_lock_pins_every_range_within_it():
    pins = lock.read_lock()
    assert len(pins) > 100, "the lock must pin transitive packages too"
    for requirement in ranges():
        name = lock.canonical(requirement.name)
        assert name in pins, f"{requirement.name} is in the ranges but not in requirements-lock.txt (make lock)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements-lock.txt pins {name}=={pins[name]}, outside {requirement} (make lock)")


def test_the_lock_pins_exact_versions_only():
    text = (ROOT / "requirements-lock.txt").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[a-z0-9-]+==[^\s]+", line), f"not an exact pin of a canonical name: {line!r}"


def test_read_lock_refuses_a_range(tmp_path):
    bad = tmp_path / "lock.txt"
    bad.write_text("# header\nnumpy==2.4.6\ntorch>=2.1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 3: expected 'name==version', got 'torch>=2.1'"):
        lock.read_lock(bad)


def test_differences_name_what_moved():
    locked = {"numpy": "2.4.6", "scipy": "1.17.1", "gone": "1.0"}
    current = {"numpy": "2.5.0", "scipy": "1.17.1", "new-thing": "0.1"}
    assert lock.differences(locked, current) == [
        "gone: locked 1.0, now not installed", "new-thing: not in the lock, now 0.1", "numpy: locked 2.4.6, now 2.5.0"]
    assert lock.canonical("Jupyter_Book") == "jupyter-book"


def test_the_no_deps_references_are_exact_pins_and_installed():
    """requirements-nodeps.txt (installed with pip --no-deps) pins exact versions that are installed here, so a
    reference test cannot skip silently for want of its library."""
    from importlib.metadata import version

    for line in (ROOT / "requirements-nodeps.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert re.fullmatch(r"[a-z0-9-]+==[^\s]+", line), f"not an exact pin: {line!r}"
            name, pinned = line.split("==")
            assert version(name) == pinned, f"{name} {version(name)} is installed; requirements-nodeps.txt pins {pinned}"
