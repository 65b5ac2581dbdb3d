"""Start nginx for the compose stack: certificate in place, config rendered and tested, then exec.

The certificate comes from /etc/nginx/tls (tls.crt + tls.key, mounted by the user); with neither
present a self-signed one is generated there on first start and reused afterwards.
"""

import os
import subprocess
import sys
from pathlib import Path

import jinja2

TLS_DIR = Path("/etc/nginx/tls")
CERT, KEY = TLS_DIR / "tls.crt", TLS_DIR / "tls.key"


def fail(message: str) -> None:
    print(f"nginx: {message}", file=sys.stderr)
    sys.exit(78)


def env_port(name: str, default: str) -> int:
    raw = os.environ.get(name, default)
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        fail(f"{name} must be a port number between 1 and 65535, got {raw!r}")
    return int(raw)


def ensure_certificate(server_name: str) -> None:
    if CERT.exists() != KEY.exists():
        missing = KEY if CERT.exists() else CERT
        fail(f"{missing} is missing: provide both tls.crt and tls.key, or neither to get a self-signed pair")
    if CERT.exists():
        return
    names = ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]
    if server_name not in ("_", "localhost"):
        names.insert(0, f"DNS:{server_name}")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "825",
            "-subj",
            f"/CN={server_name if server_name != '_' else 'localhost'}",
            "-addext",
            "subjectAltName=" + ",".join(names),
            "-keyout",
            str(KEY),
            "-out",
            str(CERT),
        ],
        check=True,
        capture_output=True,
    )
    KEY.chmod(0o600)
    print(f"nginx: generated a self-signed certificate in {TLS_DIR} (mounted from CELERYKIT_TLS_DIR)", file=sys.stderr)


def healthy() -> bool:
    """nginx answers over TLS on 443 (/ redirects to Flower, so no credentials are involved)."""
    import http.client
    import ssl

    conn = http.client.HTTPSConnection("127.0.0.1", 443, context=ssl._create_unverified_context(), timeout=5)  # noqa: S323
    conn.request("GET", "/")
    return conn.getresponse().status == 302


def main() -> None:
    if sys.argv[1:] == ["health"]:
        sys.exit(0 if healthy() else 1)
    server_name = os.environ.get("CELERYKIT_SERVER_NAME", "_")
    proxy = {
        "header": "# Rendered by the celerykit nginx image at start; edit nginx/celerykit.conf.j2 instead.",
        "server_name": server_name,
        "http_port": 80,
        "https_port": 443,
        "public_https_port": env_port("CELERYKIT_HTTPS_PORT", "8443"),
        "flower_upstream": os.environ.get("CELERYKIT_FLOWER_UPSTREAM", "flower:5555"),
        "flower_url_prefix": os.environ.get("CELERYKIT_FLOWER_URL_PREFIX", "flower").strip("/"),
        "tls_certificate": str(CERT),
        "tls_certificate_key": str(KEY),
        "metrics_allow": os.environ.get("CELERYKIT_METRICS_ALLOW", "").split(),
        "include_dir": "/etc/nginx/celerykit.d",
    }
    ensure_certificate(server_name)
    template = jinja2.Environment(
        loader=jinja2.FileSystemLoader("/etc/nginx/templates"), undefined=jinja2.StrictUndefined, trim_blocks=True
    ).get_template("celerykit.conf.j2")
    Path("/etc/nginx/conf.d/celerykit.conf").write_text(template.render(proxy=proxy) + "\n")
    test = subprocess.run(["nginx", "-t", "-q"], capture_output=True, text=True)
    if test.returncode:
        fail("configuration test failed:\n" + test.stderr)
    os.execvp("nginx", ["nginx", "-g", "daemon off;"])


if __name__ == "__main__":
    main()
