DOCUMENTATION = r"""
name: kit_default
short_description: A default of the kit (celerykit.defaults), for role defaults
description:
  - Returns the kit's default of the given name, as the compose stack and the Celery settings use it.
options:
  _terms:
    description: Names of defaults, e.g. C(pools), C(pool), C(visibility_timeout), C(flower_max_tasks).
    required: true
"""

EXAMPLES = r"""
celerykit_worker_pools: "{{ lookup('celerykit.platform.kit_default', 'pools') }}"
"""

RETURN = r"""
_raw:
  description: The default's value (any type).
"""

from ansible.errors import AnsibleError  # noqa: E402
from ansible.plugins.lookup import LookupBase  # noqa: E402
from ansible_collections.celerykit.platform.plugins.plugin_utils.kit import defaults  # noqa: E402


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        known = defaults.as_dict()
        missing = [term for term in terms if term not in known]
        if missing:
            raise AnsibleError(f"no kit default named {', '.join(missing)}; known: {', '.join(sorted(known))}")
        return [known[term] for term in terms]
