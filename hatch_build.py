"""Build hook: compile the gettext catalogs (portal/translations/*/LC_MESSAGES/*.po -> .mo).

The .po files are the source kept in git; the binary .mo files are made at install time. An
editable install writes them next to the .po files (the checkout is what runs); a wheel carries
them at the same place inside the package. `python hatch_build.py` compiles them in a checkout.
"""

from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

CATALOGS = "portal/translations/*/LC_MESSAGES/*.po"


def compile_catalogs(root):
    """Compile every catalog under root in place; returns the .mo paths, relative to root."""
    root = Path(root)
    written = []
    for po in sorted(root.glob(CATALOGS)):
        with po.open("rb") as fh:
            catalog = read_po(fh, locale=po.parent.parent.name, domain=po.stem)
        mo = po.with_suffix(".mo")
        with mo.open("wb") as fh:
            write_mo(fh, catalog, use_fuzzy=False)
        written.append(mo.relative_to(root))
    return written


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # outside a build (`python hatch_build.py`, tests): compile_catalogs alone
    BuildHookInterface = None

if BuildHookInterface is not None:
    class CatalogsHook(BuildHookInterface):
        """Compile the catalogs before the wheel (or the editable wheel) is built."""


        def initialize(self, version, build_data):
            written = compile_catalogs(self.root)
            if version != "editable":
                # .mo files are git-ignored, which hatchling's file selection honours.
                for mo in written:
                    build_data["force_include"][str(Path(self.root) / mo)] = mo.as_posix()


if __name__ == "__main__":
    for path in compile_catalogs(Path(__file__).resolve().parent):
        print(path)
