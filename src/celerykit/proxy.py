"""nginx in front of Flower: the site configuration, rendered once for both deployments.

`render_site()` fills the kit's one template (share/nginx/celerykit.conf.j2); the proxy role calls
it through the collection's `celerykit.platform.nginx_site` filter, the compose nginx image at
start (`python3 -m celerykit.proxy`), which also puts a certificate in place and execs nginx.
Needs only the standard library and Jinja2 (Debian's python3-jinja2 in the image).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from celerykit import defaults, tls
from celerykit.rules import Checker, ConfigError
from celerykit.settings import Env

SHARE = Path(__file__).parent / "share" / "nginx"
CERTIFICATE, KEY = "tls.crt", "tls.key"


def render_site(
    *,
    server_name: str,
    http_port: int,
    https_port: int,
    flower_upstream: str,
    flower_url_prefix: str,
    tls_dir: str,
    public_https_port: int | None = None,
    metrics_allow: Sequence[str] = (),
    read_timeout: str = defaults.PROXY_READ_TIMEOUT,
    include_dir: str = "",
    prometheus_upstream: str = "",
    alertmanager_upstream: str = "",
    htpasswd_file: str = "",
    resolver: str = "",
    header: str = "# Managed by celerykit.",
) -> str:
    """The site; Prometheus and Alertmanager are proxied (behind `htpasswd_file`) when their
    upstreams are given."""
    import jinja2

    proxy = {
        "header": header.rstrip("\n"),
        "server_name": server_name,
        "http_port": int(http_port),
        "https_port": int(https_port),
        "public_https_port": int(public_https_port or https_port),
        "flower_upstream": flower_upstream,
        "flower_url_prefix": flower_url_prefix.strip("/"),
        "tls_certificate": f"{tls_dir}/{CERTIFICATE}",
        "tls_certificate_key": f"{tls_dir}/{KEY}",
        "metrics_allow": list(metrics_allow),
        "read_timeout": read_timeout,
        "include_dir": include_dir,
        "monitoring": {
            name: {"upstream": upstream, "url_prefix": prefix}
            for name, upstream, prefix in (
                ("prometheus", prometheus_upstream, defaults.PROMETHEUS_URL_PREFIX),
                ("alertmanager", alertmanager_upstream, defaults.ALERTMANAGER_URL_PREFIX),
            )
            if upstream
        },
        "htpasswd_file": htpasswd_file,
        "resolver": resolver,
    }
    if proxy["monitoring"] and not htpasswd_file:
        raise ValueError("htpasswd_file is needed when Prometheus or Alertmanager is proxied")
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(SHARE), undefined=jinja2.StrictUndefined, trim_blocks=True, autoescape=False
    )
    return environment.get_template("celerykit.conf.j2").render(proxy=proxy) + "\n"


def htpasswd_line(user: str, password: str) -> str:
    """`user:{SSHA}...` for nginx's auth_basic_user_file. The salt comes from the pair itself, so
    the same credentials give the same line (a second converge changes nothing)."""
    import base64
    import hashlib

    salt = hashlib.sha256(f"celerykit htpasswd salt\0{user}\0{password}".encode()).digest()[:8]
    digest = hashlib.sha1(password.encode() + salt).digest()  # noqa: S324 - nginx's {SSHA} scheme
    return f"{user}:{{SSHA}}{base64.b64encode(digest + salt).decode()}"


# The compose image ----------------------------------------------------------------------------

TLS_DIR = Path("/etc/nginx/tls")
HTPASSWD = Path("/etc/nginx/celerykit-monitoring.htpasswd")


def read_secret(path: str) -> str:
    return Path(path).read_text().strip()


def ensure_certificate(directory: Path, server_name: str) -> bool:
    """The user's pair, or a self-signed one made now (and kept). Returns True when one was made."""
    cert, key = directory / CERTIFICATE, directory / KEY
    if cert.exists() != key.exists():
        missing = key if cert.exists() else cert
        raise ConfigError(f"{missing} is missing: put both {CERTIFICATE} and {KEY} into CELERYKIT_TLS_DIR, or neither")
    if cert.exists():
        return False
    names = tls.self_signed_names(server_name)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{tls.OPENSSL_CURVE}", "-nodes",
         "-days", str(tls.VALID_DAYS), "-subj", f"/CN={tls.common_name(server_name)}",
         "-addext", "subjectAltName=" + ",".join(names), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    return True


def main(argv: Sequence[str] = ()) -> int:
    """The compose image's entrypoint: certificate + config + `nginx -t`, then exec nginx."""
    env = Env.current().get  # an empty variable is an unset one: the kit's default applies
    check = Checker()
    public_port = check.port("CELERYKIT_HTTPS_PORT", env("CELERYKIT_HTTPS_PORT", "8443"))
    prefix = env("CELERYKIT_FLOWER_URL_PREFIX", defaults.FLOWER_URL_PREFIX).strip("/")
    check.url_prefix("CELERYKIT_FLOWER_URL_PREFIX", prefix)
    server_name = env("CELERYKIT_SERVER_NAME", "_")
    try:
        check.raise_if_any()
        if ensure_certificate(TLS_DIR, server_name):
            print(f"nginx: generated a self-signed certificate in {TLS_DIR} (CELERYKIT_TLS_DIR)", file=sys.stderr)
    except ConfigError as error:
        print(f"nginx: {error}", file=sys.stderr)
        return 78
    monitoring = {}
    password_file = env("CELERYKIT_FLOWER_PASSWORD_FILE")
    if env("CELERYKIT_PROMETHEUS_UPSTREAM") and password_file:
        user = env("CELERYKIT_FLOWER_USER", defaults.FLOWER_USER)
        HTPASSWD.write_text(htpasswd_line(user, read_secret(password_file)) + "\n")
        HTPASSWD.chmod(0o640)  # nginx's workers read it at every request: their group, no one else
        shutil.chown(HTPASSWD, "root", "www-data")
        monitoring = {
            "prometheus_upstream": env("CELERYKIT_PROMETHEUS_UPSTREAM"),
            "alertmanager_upstream": env("CELERYKIT_ALERTMANAGER_UPSTREAM", ""),
            "htpasswd_file": str(HTPASSWD),
            "resolver": "127.0.0.11",  # Docker's DNS: Prometheus and Alertmanager by service name
        }
    site = render_site(
        server_name=server_name,
        http_port=80,  # inside the container; compose publishes them where the user says
        https_port=443,
        public_https_port=public_port,
        flower_upstream=env("CELERYKIT_FLOWER_UPSTREAM", f"flower:{defaults.FLOWER_PORT}"),
        flower_url_prefix=prefix,
        tls_dir=str(TLS_DIR),
        metrics_allow=(env("CELERYKIT_METRICS_ALLOW") or "").split(),
        include_dir="/etc/nginx/celerykit.d",
        header="# Rendered by the celerykit nginx image at start (celerykit.proxy).",
        **monitoring,
    )
    Path("/etc/nginx/conf.d/celerykit.conf").write_text(site)
    test = subprocess.run(["nginx", "-t", "-q"], capture_output=True, text=True)
    if test.returncode:
        print("nginx: configuration test failed:\n" + test.stderr, file=sys.stderr)
        return 78
    os.execvp("nginx", ["nginx", "-g", "daemon off;"])
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
