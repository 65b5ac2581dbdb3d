DOCUMENTATION = r"""
name: kit_archive
short_description: The kit's Python package as one source archive, on the controller
description:
  - Packs the kit's package (C(pyproject.toml), C(README.md), C(src/celerykit)) shipped in this
    collection into one C(.tar.gz) source archive that pip installs, and returns its path on the
    controller. Hosts then get one file instead of one copy per source file.
  - The archive is byte-for-byte the same for the same source (sorted names, fixed times and
    owners), so copying it again reports no change; it is made once per source and kept in the
    controller's temporary directory under a name holding its digest.
"""

EXAMPLES = r"""
src: "{{ lookup('celerykit.platform.kit_archive') }}"
"""

RETURN = r"""
_raw:
  description: The archive's absolute path, one element.
"""

import gzip  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from ansible.plugins.lookup import LookupBase  # noqa: E402
from ansible_collections.celerykit.platform.plugins.plugin_utils.kit import SOURCE, celerykit  # noqa: E402

# Zip, which the wheel pip builds from the archive is, cannot hold times before 1980.
MTIME = 315532800  # 1980-01-01


def package_files() -> list[str]:
    """The files pip needs to build the kit, relative to the source tree, sorted."""
    package = SOURCE / "src" / "celerykit"
    found = [
        p.relative_to(SOURCE).as_posix()
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    ]
    return ["README.md", "pyproject.toml", *sorted(found)]


def pack(names: list[str], top: str) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped, tarfile.open(fileobj=zipped, mode="w") as tar:
        for name in names:
            data = (SOURCE / name).read_bytes()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mtime, info.mode = len(data), MTIME, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        archive = pack(package_files(), f"celerykit-{celerykit.__version__}")
        path = Path(tempfile.gettempdir()) / f"celerykit-{hashlib.sha256(archive).hexdigest()[:16]}.tar.gz"
        if not path.exists():  # several hosts' forks may get here at once: each renames a whole file
            partial = path.with_suffix(f".{os.getpid()}.partial")
            partial.write_bytes(archive)
            partial.replace(path)
        return [str(path)]
