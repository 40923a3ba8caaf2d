"""Webhook targets: only http(s) to public addresses (or networks allowed by
WEBHOOK_ALLOWED_NETWORKS), checked when the URL is saved and again at each
delivery, which connects to the address it checked; redirects are not
followed; connecting and answering have time limits.

Receivers are real servers on 127.0.0.1; names that would need public DNS
resolve through the `fake_dns` fixture."""

from __future__ import annotations

import datetime
import io
import re
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.urls import reverse

from budgets.models import Alert, AlertDeliveryAttempt, AuditEntry, Organization
from budgets.webhooks import TargetRefused, check_url, post_json
from tests.budgets.test_alerts import Receiver, reserve

# The targets of issue 25 and their relatives: (URL, words the refusal says).
REFUSED = [
    ("http://127.0.0.1:8199/", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[::1]:5432/", "loopback"),
    ("http://localhost:6379/", "loopback"),
    ("http://10.0.0.1/", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://[fd00::1]/", "private"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fec0::1]/", "site-local"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff0e::1]/", "multicast"),
    ("http://0.0.0.0:8000/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://240.0.0.1/", "reserved"),
    ("http://100.64.0.1/", "not a public address"),  # carrier-grade NAT
    ("http://2130706433/", "loopback"),  # 127.0.0.1 as one number
    ("http://0x7f.1/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "IPv4 127.0.0.1) is a loopback"),
    ("http://[::ffff:169.254.169.254]/", "IPv4 169.254.169.254) is a link-local"),
    ("http://[::ffff:10.0.0.1]/", "IPv4 10.0.0.1) is a private"),
    ("http://[2002:7f00:1::]/", "IPv4 127.0.0.1) is a loopback"),  # 6to4
    ("http://[64:ff9b::a9fe:a9fe]/", "IPv4 169.254.169.254) is a link-local"),  # NAT64
    ("ftp://hooks.example.com/x", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("gopher://hooks.example.com/", "http:// or https://"),
    ("http:///no-host", "no host"),
]


@pytest.mark.parametrize(("url", "words"), REFUSED)
def test_each_internal_target_is_refused_in_words(db, fake_dns, url, words):
    fake_dns["hooks.example.com"] = ["93.184.215.14"]
    org = Organization(slug="acme", time_zone="UTC", webhook_url=url)

    with pytest.raises(ValidationError) as refused:
        org.full_clean()

    message = " ".join(refused.value.message_dict["webhook_url"])
    assert words in message, message


def test_a_public_target_is_accepted(db, fake_dns):
    fake_dns["hooks.example.com"] = ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    Organization(slug="acme", webhook_url="https://hooks.example.com/services/T/B/x").full_clean()
    Organization(slug="acme2", webhook_url="http://93.184.215.14:8080/hook").full_clean()


def test_a_name_with_any_private_address_is_refused(db, fake_dns):
    """One address is enough: the connection could go to any of them."""
    fake_dns["mixed.example.com"] = ["93.184.215.14", "10.1.2.3"]
    with pytest.raises(
        TargetRefused, match=re.escape("'mixed.example.com' resolves to 10.1.2.3 is a private")
    ):
        check_url("https://mixed.example.com/hook")


def test_a_name_that_does_not_resolve_is_refused(db):
    with pytest.raises(TargetRefused, match="could not be resolved"):
        check_url("https://no-such-host.invalid/hook")


def test_allowed_networks_let_named_private_networks_through(db, settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["10.20.0.0/16", "fd00:20::/64"]

    check_url("http://10.20.3.4/hook")
    check_url("http://[fd00:20::5]/hook")
    check_url("http://[::ffff:10.20.3.4]/hook")  # the same address, IPv4-mapped
    for other in ("http://10.21.0.1/", "http://127.0.0.1/", "http://169.254.169.254/"):
        with pytest.raises(TargetRefused):
            check_url(other)


@pytest.fixture
def staff_client(client, db):
    user = get_user_model().objects.create_superuser("boss", "", "pw-for-tests-only")
    client.force_login(user)
    return client


def _org_form(org: Organization, webhook_url: str) -> dict[str, str]:
    return {
        "slug": org.slug,
        "name": org.name,
        "time_zone": org.time_zone,
        "fail_mode": "",
        "webhook_url": webhook_url,
        "unpriced_policy": "fallback",
        "created_at_0": "2026-12-01",
        "created_at_1": "00:00:00",
    }


def test_admin_refuses_an_internal_webhook_in_words(staff_client, make_org):
    org = make_org("acme")
    url = reverse("admin:budgets_organization_change", args=[org.pk])

    response = staff_client.post(url, _org_form(org, "http://169.254.169.254/latest/meta-data/"))

    assert response.status_code == 200  # the form again, with the error
    assert "169.254.169.254 is a link-local address" in response.content.decode()
    org.refresh_from_db()
    assert org.webhook_url == ""
    assert not AuditEntry.objects.filter(object_type="organization", action="update").exists()


def test_admin_saves_a_public_webhook_and_audits_it(staff_client, make_org, fake_dns):
    fake_dns["hooks.example.com"] = ["93.184.215.14"]
    org = make_org("acme")
    url = reverse("admin:budgets_organization_change", args=[org.pk])

    response = staff_client.post(url, _org_form(org, "https://hooks.example.com/services/s3cr3t"))

    assert response.status_code == 302, response.content.decode()[:2000]
    entry = AuditEntry.objects.get(object_type="organization", action="update")
    assert entry.new["webhook_url"].startswith("https://hooks.example.com/… (sha256 ")


def test_an_unchanged_url_is_not_resolved_again_on_other_edits(db, fake_dns):
    """A DNS hiccup must not block every other edit of the org; the saved URL
    is checked at each delivery anyway."""
    fake_dns["hooks.example.com"] = ["93.184.215.14"]
    org = Organization(slug="acme", webhook_url="https://hooks.example.com/x")
    org.full_clean()
    org.save()
    del fake_dns["hooks.example.com"]  # now it does not resolve

    org.time_zone = "Europe/Paris"
    org.full_clean()  # no error: the URL did not change
    org.webhook_url = "https://hooks.example.com/y"
    with pytest.raises(ValidationError, match="could not be resolved"):
        org.full_clean()


# --- Delivery ---------------------------------------------------------------------


def _alert_to(api, org, key, make_budget, url: str) -> None:
    """An alert waiting for delivery to `url` (saved without the check, as
    a URL saved before DNS changed would be)."""
    org.webhook_url = url
    org.alerts_count_holds = True
    org.save()
    make_budget(org, "1", soft_limit_pct=50)
    reserve(api, key, "0.6", team=None)


def test_delivery_checks_again_and_refuses_without_connecting(api, org, key, make_budget):
    receiver = Receiver()  # on 127.0.0.1, which is not allowed here
    try:
        _alert_to(api, org, key, make_budget, receiver.url)
        call_command("deliver_alerts", stdout=io.StringIO())
    finally:
        receiver.server.shutdown()

    assert receiver.bodies == []
    attempt = AlertDeliveryAttempt.objects.get()
    assert attempt.status_code is None
    assert "127.0.0.1 is a loopback address" in attempt.error
    assert Alert.objects.get().delivery_status == "pending"  # retried later, checked again


def test_delivery_after_dns_changed_to_an_internal_address_is_refused(
    api, org, key, make_budget, fake_dns
):
    fake_dns["hooks.example.com"] = ["93.184.215.14"]
    org.webhook_url = "http://hooks.example.com/hook"
    org.full_clean()  # accepted: public when saved
    fake_dns["hooks.example.com"] = ["169.254.169.254"]  # then the name changes
    _alert_to(api, org, key, make_budget, org.webhook_url)

    call_command("deliver_alerts", stdout=io.StringIO())

    attempt = AlertDeliveryAttempt.objects.get()
    assert "'hooks.example.com' resolves to 169.254.169.254" in attempt.error


class _CountingDns:
    """Resolves a name to 127.0.0.1 once, and to an address nothing
    listens on after that: a rebinding name."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, host: str, port: int):
        self.calls += 1
        address = "127.0.0.1" if self.calls == 1 else "127.0.0.2"
        return [(socket.AF_INET, (address, port))]


def test_delivery_connects_to_the_address_it_checked(
    api, org, key, make_budget, loopback_webhooks, monkeypatch
):
    """The name is resolved once per delivery and the connection goes to that
    address: a second lookup (which would now give another address) is never
    made, while the receiver still sees the name in Host."""
    from budgets import webhooks

    receiver = Receiver()
    hosts: list[str] = []
    handler = receiver.server.RequestHandlerClass
    original = handler.do_POST

    def do_post(self) -> None:
        hosts.append(self.headers["Host"])
        original(self)

    handler.do_POST = do_post
    port = receiver.server.server_address[1]
    dns = _CountingDns()
    monkeypatch.setattr(webhooks, "resolve", dns)
    try:
        status = post_json(f"http://hooks.example.com:{port}/hook", b'{"x": 1}')
    finally:
        receiver.server.shutdown()

    assert status == 200
    assert dns.calls == 1
    assert hosts == [f"hooks.example.com:{port}"]
    assert receiver.bodies == [{"x": 1}]


class _Redirecting(Receiver):
    """Answers every POST with 302 to `location`."""

    def __init__(self, location: str) -> None:
        super().__init__()
        self.server.RequestHandlerClass.do_POST = _redirect(location, self)


def _redirect(location: str, receiver: Receiver):
    def do_post(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        receiver.bodies.append({})
        self.send_response(302)
        self.send_header("Location", location)
        self.end_headers()

    return do_post


def test_redirects_are_not_followed(api, org, key, make_budget, loopback_webhooks):
    target = Receiver()
    redirecting = _Redirecting(target.url)
    try:
        _alert_to(api, org, key, make_budget, redirecting.url)
        call_command("deliver_alerts", stdout=io.StringIO())
    finally:
        target.server.shutdown()
        redirecting.server.shutdown()

    assert len(redirecting.bodies) == 1 and target.bodies == []
    attempt = AlertDeliveryAttempt.objects.get()
    assert attempt.status_code == 302
    assert attempt.error == "HTTP 302 (redirects are not followed)"
    assert Alert.objects.get().delivery_status == "pending"  # a failed attempt


def _silent_server(drip: bytes = b"") -> tuple[socket.socket, list[socket.socket]]:
    """A listener that accepts and then sends `drip` one byte every 0.2 s
    (nothing when empty), never finishing an answer."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)
            for byte in drip:
                time.sleep(0.2)
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    break

    threading.Thread(target=serve, daemon=True).start()
    return listener, held


@pytest.mark.parametrize("drip", [b"", b"HTTP/1.1 200 OK\r\n"], ids=["silent", "dripping"])
def test_a_receiver_that_does_not_answer_in_time_fails_the_attempt(
    loopback_webhooks, settings, drip
):
    """The read timeout bounds the whole wait, not each byte: a receiver that
    drips its status line slower than that fails too."""
    settings.WEBHOOK_READ_TIMEOUT_SECONDS = 1.0
    listener, held = _silent_server(drip)
    port = listener.getsockname()[1]
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match="did not answer in time"):
            post_json(f"http://127.0.0.1:{port}/hook", b"{}")
    finally:
        listener.close()
        for conn in held:
            conn.close()
    assert time.monotonic() - started < 3


def test_a_receiver_that_does_not_accept_in_time_fails_the_attempt(loopback_webhooks, settings):
    """A listener whose backlog is full drops further connection attempts
    (Linux), so connecting to it waits until the connect timeout."""
    settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS = 0.5
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue, never accepted
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.2)
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match=re.escape("No connection within 0.5 s")):
            post_json(f"http://127.0.0.1:{port}/hook", b"{}")
    finally:
        listener.close()
        for filler in fillers:
            filler.close()
    assert time.monotonic() - started < 2


def test_admin_test_alert_to_an_internal_address_says_why(staff_client, make_org):
    org = make_org("acme")
    Organization.objects.filter(pk=org.pk).update(webhook_url="http://[::ffff:127.0.0.1]:6379/")

    response = staff_client.post(
        reverse("admin:budgets_organization_changelist"),
        {"action": "send_test_alert", "_selected_action": [org.pk]},
        follow=True,
    )

    page = response.content.decode()
    assert "failed: Webhooks may not go to private or internal addresses" in page
    assert "(IPv4 127.0.0.1) is a loopback address" in page
    entry = AuditEntry.objects.get(action="test_webhook")
    assert entry.new["status_code"] is None


# --- HTTPS: the certificate is checked against the name, not the address ---------------


def _certificate(tmp_path, name: str) -> tuple[str, str, str]:
    """A CA and a server certificate for `name` signed by it: (ca, cert, key) files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tollgate test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = (tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tuple(str(f) for f in files)


@pytest.fixture
def tls_receiver(tmp_path, monkeypatch, loopback_webhooks):
    """An HTTPS receiver on 127.0.0.1 with a certificate for hooks.example.com
    from a CA this process trusts (SSL_CERT_FILE)."""
    ca, cert, key = _certificate(tmp_path, "hooks.example.com")
    monkeypatch.setenv("SSL_CERT_FILE", ca)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_https_verifies_the_certificate_against_the_name(tls_receiver, fake_dns):
    fake_dns["hooks.example.com"] = ["127.0.0.1"]
    fake_dns["other.example.com"] = ["127.0.0.1"]

    assert post_json(f"https://hooks.example.com:{tls_receiver}/hook", b"{}") == 204
    with pytest.raises(ssl.SSLCertVerificationError):
        post_json(f"https://other.example.com:{tls_receiver}/hook", b"{}")
