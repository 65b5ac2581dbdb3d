"""celerykit.platform.redis_certificates: a certificate for Redis's TLS from the kit's own CA, on the controller.

Arguments:
  directory   a controller directory: the CA (`ca.crt`, `ca.key`) is made there on the first run and
              kept; what it issues goes there too
  name        the file name of what is issued (`<name>.crt`, `<name>.key`): a host's inventory name
  names       the names the certificate must carry (what clients connect to: host names, addresses)
  client      a client certificate (Redis asks for one: `tls-auth-clients yes`) rather than a server's

A certificate is issued again when it no longer covers `names`, comes from another CA or is near its
end (celerykit.pki). Returns the controller paths `ca`, `cert` and `key`; changed when it wrote a file.
The CA's key never leaves the controller. Runs on the controller (as the validate action does).
"""

from __future__ import annotations

from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.celerykit.platform.plugins.plugin_utils.kit import pki


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        missing = [key for key in ("directory", "name", "names") if not args.get(key)]
        if missing:
            raise AnsibleActionFail(f"redis_certificates needs {', '.join(missing)}")
        directory, name = Path(args["directory"]).expanduser(), str(args["name"])
        names = [str(n) for n in args["names"]]
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        files = pki.Files(
            ca=directory / "ca.crt",
            ca_key=directory / "ca.key",
            cert=directory / f"{name}.crt",
            key=directory / f"{name}.key",
        )
        client = bool(args.get("client", False))
        written = pki.ensure_locked(files, names, ca_name="celerykit CA for Redis", client=client)
        result.update(changed=bool(written), ca=str(files.ca), cert=str(files.cert), key=str(files.key))
        return result
