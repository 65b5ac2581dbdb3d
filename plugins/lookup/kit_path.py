DOCUMENTATION = r"""
name: kit_path
short_description: Path of a file of the kit's source shipped in this collection
description:
  - Returns the absolute path, on the controller, of a file or directory of the kit's source tree
    (the collection root). C(src/celerykit/share) holds the shared templates and files.
options:
  _terms:
    description: Paths relative to the kit's source tree; C(.) is the tree itself.
    required: true
"""

EXAMPLES = r"""
src: "{{ lookup('celerykit.platform.kit_path', 'src/celerykit/share/systemd/flower.service.j2') }}"
"""

RETURN = r"""
_raw:
  description: Absolute paths.
"""

from ansible.errors import AnsibleError  # noqa: E402
from ansible.plugins.lookup import LookupBase  # noqa: E402
from ansible_collections.celerykit.platform.plugins.plugin_utils.kit import SOURCE  # noqa: E402


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        paths = [(SOURCE / term).resolve() for term in terms]
        for term, path in zip(terms, paths, strict=True):
            if not path.exists() or SOURCE not in (path, *path.parents):
                raise AnsibleError(f"{term} is not a file of the kit's source ({SOURCE})")
        return [str(path) for path in paths]
