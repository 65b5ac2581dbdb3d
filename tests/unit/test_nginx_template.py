"""The one nginx template renders to a config nginx accepts, with the promised directives."""

from pathlib import Path

import jinja2

ROOT = Path(__file__).resolve().parents[2]


def render(**overrides) -> str:
    proxy = {
        "server_name": "flower.example.com",
        "http_port": 80,
        "https_port": 443,
        "public_https_port": 443,
        "flower_upstream": "127.0.0.1:5555",
        "flower_url_prefix": "flower",
        "tls_certificate": "/etc/ssl/celerykit.crt",
        "tls_certificate_key": "/etc/ssl/celerykit.key",
        "metrics_allow": ["10.0.0.0/8"],
        **overrides,
    }
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROOT / "nginx"), undefined=jinja2.StrictUndefined)
    return env.get_template("celerykit.conf.j2").render(proxy=proxy)


def test_tls_is_mozilla_intermediate_with_hsts():
    conf = render()
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in conf
    assert "ssl_prefer_server_ciphers off;" in conf
    assert 'Strict-Transport-Security "max-age=63072000" always' in conf
    ciphers = next(line for line in conf.splitlines() if "ssl_ciphers" in line)
    assert all(
        c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c) for c in ciphers.split()[1].rstrip(";").split(":")
    )


def test_redirect_keeps_a_non_standard_https_port():
    assert "return 301 https://$host$request_uri;" in render()
    assert "return 301 https://$host:8443$request_uri;" in render(public_https_port=8443)


def test_metrics_allow_only_the_listed_networks():
    conf = render(metrics_allow=["10.0.0.0/8", "127.0.0.1"])
    block = conf[conf.index("(metrics|healthcheck)") :]
    assert block.index("allow 10.0.0.0/8;") < block.index("allow 127.0.0.1;") < block.index("deny all;")
    assert "allow" not in render(metrics_allow=[])[conf.index("(metrics|healthcheck)") :].split("deny all;")[0]


def test_websocket_upgrade_headers_are_passed():
    conf = render()
    assert "proxy_http_version 1.1;" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_set_header Connection $celerykit_connection_upgrade;" in conf
