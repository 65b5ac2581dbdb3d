"""The one nginx template renders to a config nginx accepts, with the promised directives."""

from pathlib import Path

from celerykit.proxy import render_site

ROOT = Path(__file__).resolve().parents[2]


def render(**overrides) -> str:
    settings = {
        "server_name": "flower.example.com",
        "http_port": 80,
        "https_port": 443,
        "flower_upstream": "127.0.0.1:5555",
        "flower_url_prefix": "flower",
        "tls_dir": "/etc/ssl/celerykit",
        "metrics_allow": ["10.0.0.0/8"],
        **overrides,
    }
    return render_site(**settings)


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


def test_the_self_signed_recipe_makes_a_p256_certificate_for_the_names_it_promises(tmp_path):
    """The compose image's first certificate (the proxy role follows the same recipe, celerykit.tls)."""
    import subprocess

    from celerykit import tls
    from celerykit.proxy import ensure_certificate

    assert ensure_certificate(tmp_path, "flower.example.com")
    assert not ensure_certificate(tmp_path, "flower.example.com")  # kept, not made again
    text = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "tls.crt"), "-noout", "-text"], capture_output=True, text=True
    ).stdout
    assert "NIST CURVE: P-256" in text
    assert "DNS:flower.example.com, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1" in text
    days = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "tls.crt"), "-noout", "-checkend", str((tls.VALID_DAYS - 1) * 86400)],
        capture_output=True,
    )
    assert days.returncode == 0
    assert oct((tmp_path / "tls.key").stat().st_mode & 0o777) == "0o600"


def test_a_certificate_without_its_key_is_refused(tmp_path):
    import pytest

    from celerykit.proxy import ensure_certificate
    from celerykit.rules import ConfigError

    (tmp_path / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=r"tls\.key is missing"):
        ensure_certificate(tmp_path, "_")


def test_long_lived_connections_get_the_kits_read_timeout():
    from celerykit import defaults

    assert f"proxy_read_timeout {defaults.PROXY_READ_TIMEOUT};" in render()
    assert "proxy_read_timeout 5m;" in render(read_timeout="5m")
