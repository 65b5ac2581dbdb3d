"""celerykit.platform.validate: check inventory variables against the kit's rules (celerykit.rules).

Each argument is named like the variable it checks and holds its value, e.g.
`celerykit_worker_pools: "{{ celerykit_worker_pools }}"`. Every problem is reported at once, one
line each, naming the variable; secrets are never echoed. Runs on the controller, changes nothing.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase
from ansible_collections.celerykit.platform.plugins.plugin_utils.kit import inventory


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        unknown = sorted(set(args) - set(inventory.CHECKS))
        problems = [f"{name} is not a setting the kit checks" for name in unknown]
        problems += inventory.check(args)
        result["changed"] = False
        if problems:
            result["failed"] = True
            result["msg"] = "\n".join(problems)
            result["problems"] = problems
        else:
            result["msg"] = f"{len(args)} setting(s) valid"
        return result
