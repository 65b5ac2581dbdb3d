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

import os
from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.celerykit.platform.plugins.plugin_utils.kit import pki


def _write(path: Path, content: bytes, mode: int) -> None:
    partial = path.with_name(path.name + ".new")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    partial.replace(path)


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
        ca, ca_key = directory / "ca.crt", directory / "ca.key"
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        changed = False
        if not ca_key.exists():
            authority = pki.make_ca("celerykit CA for Redis")
            _write(ca_key, authority.key, 0o600)
            _write(ca, authority.cert, 0o644)
            changed = True
        authority = pki.Pair(ca_key.read_bytes(), ca.read_bytes())
        if not (cert.exists() and key.exists() and pki.still_good(cert.read_bytes(), authority.cert, names)):
            issued = pki.issue(authority, names, client=bool(args.get("client", False)))
            _write(key, issued.key, 0o600)
            _write(cert, issued.cert, 0o644)
            changed = True
        result.update(changed=changed, ca=str(ca), cert=str(cert), key=str(key))
        return result
