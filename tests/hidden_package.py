"""A prelude for `python -c` subprocesses: every import finder is wrapped so that it sees neither a
package nor its distribution metadata, and the interpreter behaves as one where it was never
installed (find_spec None, import ModuleNotFoundError, importlib.metadata PackageNotFoundError),
whatever this environment holds (CI installs the optional engines beside the project)."""


def without_package(module: str, dist_prefix: str) -> str:
    """Code to run first: hides the import package `module` and every distribution whose
    normalized name starts with `dist_prefix`."""
    return f'''
import sys
class _Hide:
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        if name == {module!r} or name.startswith({module + "."!r}):
            return None
        find = getattr(self.inner, "find_spec", None)
        return find(name, path, target) if find else None
    def find_distributions(self, *args, **kwargs):
        find = getattr(self.inner, "find_distributions", None)
        for dist in (find(*args, **kwargs) if find else ()):
            if not (dist.metadata["Name"] or "").lower().replace("_", "-").startswith({dist_prefix!r}):
                yield dist
    def __getattr__(self, attr):
        return getattr(self.inner, attr)
sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]
'''
