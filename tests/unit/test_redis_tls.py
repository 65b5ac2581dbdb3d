"""Redis over TLS as the kit's clients reach it (celerykit.settings.RedisTLS, celerykit.pki): a real
`redis-server` with TLS only, certificates from the kit's own CA recipe, and Celery's own broker
connection and result backend with the kit's settings. What must connect connects; what must be
refused (no CA, another CA, a wrong name, an expired certificate, no client certificate when Redis
asks for one, plain text) is refused."""

from __future__ import annotations

import datetime
import secrets
import ssl
from pathlib import Path

import pytest
from celery import Celery
from celerykit_testing.local_redis import ServerTLS, start_redis, stop_redis
from cryptography import x509
from kombu.exceptions import OperationalError

from celerykit import pki
from celerykit.celeryconfig import kit_settings
from celerykit.rules import ConfigError
from celerykit.settings import Env, Redis


def write(directory: Path, name: str, pair: pki.Pair) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    key.write_bytes(pair.key)
    key.chmod(0o600)
    cert.write_bytes(pair.cert)
    return cert, key


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> tuple[Path, pki.Pair]:
    directory = tmp_path_factory.mktemp("ca")
    pair = pki.make_ca()
    write(directory, "ca", pair)
    return directory, pair


PASSWORD = secrets.token_urlsafe(24)  # the throw-away Redis's


def server(tmp_path: Path, ca: tuple[Path, pki.Pair], names=("127.0.0.1",), days=30, clients=False):
    directory, authority = ca
    cert, key = write(tmp_path, "redis", pki.issue(authority, list(names), days=days))
    tls = ServerTLS(cert, key, directory / "ca.crt", clients)
    return start_redis(tmp_path, notifications=True, tls=tls, password=PASSWORD)


def env(port: int, tmp_path: Path, **tls: str) -> Env:
    (tmp_path / "password").write_text(PASSWORD)
    return Env(
        {
            "CELERYKIT_REDIS_HOST": "127.0.0.1",
            "CELERYKIT_REDIS_PORT": str(port),
            "CELERYKIT_REDIS_USER": "default",
            "CELERYKIT_REDIS_PASSWORD_FILE": str(tmp_path / "password"),
            **tls,
        }
    )


def kit_app(environment: Env) -> Celery:
    app = Celery("tls-test", set_as_current=False)
    app.conf.update(kit_settings(environment))
    app.conf.broker_connection_retry_on_startup = False
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "max_retries": 0}
    return app


def round_trip(app: Celery) -> str:
    """The broker connection and the result backend, as a kit service uses them."""
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1)
        connection.default_channel.client.ping()
    app.backend.set("celerykit-tls-test", "ok")
    return app.backend.get("celerykit-tls-test").decode()


@pytest.fixture
def redis_tls(tmp_path, ca):
    started = []

    def start(**options):
        started.append(server(tmp_path, ca, **options))
        return started[-1]

    yield start
    for each in started:
        stop_redis(each)


def test_the_kit_reaches_redis_over_tls_trusting_its_ca_only(redis_tls, tmp_path, ca):
    found = redis_tls()
    settings = env(found.port, tmp_path, CELERYKIT_REDIS_TLS="true", CELERYKIT_REDIS_CA_FILE=str(ca[0] / "ca.crt"))
    redis = Redis.from_env(settings)
    assert redis.url.startswith("rediss://")
    assert redis.tls.ssl_options()["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert round_trip(kit_app(settings)) == "ok"


def refused(app: Celery) -> str:
    with pytest.raises((OperationalError, ConnectionError, OSError)) as error:
        round_trip(app)
    return repr(error.value)


def test_redis_is_refused_when_its_certificate_is_not_from_the_trusted_ca(redis_tls, tmp_path):
    found = redis_tls()
    other = tmp_path / "other-ca.crt"
    other.write_bytes(pki.make_ca("another CA").cert)
    settings = env(found.port, tmp_path, CELERYKIT_REDIS_TLS="true", CELERYKIT_REDIS_CA_FILE=str(other))
    assert "CERTIFICATE_VERIFY_FAILED" in refused(kit_app(settings))


def test_redis_is_refused_under_a_name_its_certificate_does_not_carry(redis_tls, tmp_path, ca):
    found = redis_tls(names=("redis.internal",))  # the clients ask for 127.0.0.1
    settings = env(found.port, tmp_path, CELERYKIT_REDIS_TLS="true", CELERYKIT_REDIS_CA_FILE=str(ca[0] / "ca.crt"))
    assert "CERTIFICATE_VERIFY_FAILED" in refused(kit_app(settings))


def test_redis_is_refused_with_an_expired_certificate(redis_tls, tmp_path, ca):
    found = redis_tls(days=-1)
    settings = env(found.port, tmp_path, CELERYKIT_REDIS_TLS="true", CELERYKIT_REDIS_CA_FILE=str(ca[0] / "ca.crt"))
    assert "CERTIFICATE_VERIFY_FAILED" in refused(kit_app(settings))


def test_a_client_in_plain_text_gets_nothing_from_a_tls_redis(redis_tls, tmp_path):
    found = redis_tls()
    refused(kit_app(env(found.port, tmp_path)))  # redis://: Redis answers no plain command


def test_a_redis_that_asks_for_client_certificates_takes_the_kits_and_no_other(redis_tls, tmp_path, ca):
    found = redis_tls(clients=True)
    tls = {"CELERYKIT_REDIS_TLS": "true", "CELERYKIT_REDIS_CA_FILE": str(ca[0] / "ca.crt")}
    refused(kit_app(env(found.port, tmp_path, **tls)))
    cert, key = write(tmp_path, "client", pki.issue(ca[1], ["celerykit-client"], client=True))
    with_cert = env(found.port, tmp_path, **tls, CELERYKIT_REDIS_CERT_FILE=str(cert), CELERYKIT_REDIS_KEY_FILE=str(key))
    assert round_trip(kit_app(with_cert)) == "ok"


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        ({"CELERYKIT_REDIS_TLS": "yes"}, "CELERYKIT_REDIS_TLS must be true or false, got 'yes'"),
        (
            {"CELERYKIT_REDIS_TLS": "true", "CELERYKIT_REDIS_CA_FILE": "/nonexistent/ca.crt"},
            "CELERYKIT_REDIS_CA_FILE must name an existing file, got '/nonexistent/ca.crt'",
        ),
        ({"CELERYKIT_REDIS_TLS": "true"}, "CELERYKIT_REDIS_CA_FILE must be set to a file's path, got None"),
        (
            {
                "CELERYKIT_REDIS_TLS": "true",
                "CELERYKIT_REDIS_CA_FILE": "/etc/hostname",
                "CELERYKIT_REDIS_CERT_FILE": "/etc/hostname",
            },
            "CELERYKIT_REDIS_CERT_FILE needs CELERYKIT_REDIS_KEY_FILE too (a client certificate and its key), "
            "got '/etc/hostname'",
        ),
    ],
)
def test_bad_tls_settings_are_refused_by_name(tmp_path, settings, line):
    with pytest.raises(ConfigError) as error:
        Redis.from_env(env(6379, tmp_path, **settings))
    assert str(error.value) == line


def test_the_kits_ca_issues_what_it_is_asked_and_renews_what_runs_out(ca):
    _, authority = ca
    issued = pki.issue(authority, ["redis", "10.0.0.5"])
    cert = x509.load_pem_x509_certificate(issued.cert)
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alt.get_values_for_type(x509.DNSName) == ["redis"]
    assert [str(a) for a in alt.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=700)
    assert pki.still_good(issued.cert, authority.cert, ["redis"])
    assert not pki.still_good(issued.cert, authority.cert, ["redis", "another-name"])  # a name was added
    assert not pki.still_good(pki.issue(authority, ["redis"], days=10).cert, authority.cert, ["redis"])
    assert not pki.still_good(issued.cert, pki.make_ca().cert, ["redis"])  # another CA's


def _ensure_for(directory: str, host: str) -> None:
    files = pki.Files(
        ca=Path(directory) / "ca.crt",
        ca_key=Path(directory) / "ca.key",
        cert=Path(directory) / f"{host}.crt",
        key=Path(directory) / f"{host}.key",
    )
    pki.ensure_locked(files, [host], ca_name="race test CA")


def test_hosts_issued_at_once_share_one_ca(tmp_path):
    """As Ansible runs the certificate task: every host in its own process at the same moment, no CA
    yet. Each succeeds, and each certificate is signed by the one CA left in the directory."""
    import multiprocessing

    hosts = [f"host-{n}" for n in range(8)]
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_ensure_for, args=(str(tmp_path), host)) for host in hosts]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [process.exitcode for process in processes] == [0] * len(hosts)
    ca = (tmp_path / "ca.crt").read_bytes()
    assert all(pki.still_good((tmp_path / f"{host}.crt").read_bytes(), ca, [host]) for host in hosts)
