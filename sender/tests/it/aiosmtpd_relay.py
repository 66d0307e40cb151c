"""A relay no one here wrote, for the sender's tests: aiosmtpd with STARTTLS and AUTH.

Prints READY once it listens and `DELIVERED <rcpt>` for every accepted recipient, so the test
counts deliveries from this process's own output.

    python3 aiosmtpd_relay.py --port P [--cert C --key K] [--user U --password W]
                              [--only-mechanism PLAIN|LOGIN] [--pipelining] [--implicit]
"""
import argparse
import asyncio
import signal
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    def __init__(self, pipelining):
        self.pipelining = pipelining

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        print(f"EHLO {hostname}", flush=True)
        if self.pipelining:
            # aiosmtpd reads commands one line at a time, so pipelined input works; it only
            # does not say so.
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server, session, envelope):
        for rcpt in envelope.rcpt_tos:
            print(f"DELIVERED {rcpt}", flush=True)
        return "250 2.0.0 OK"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--only-mechanism")
    p.add_argument("--pipelining", action="store_true")
    p.add_argument("--implicit", action="store_true", help="TLS from the first byte (smtps)")
    a = p.parse_args()

    kwargs = {}
    if a.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)
        if a.implicit:
            kwargs.update(ssl_context=ctx)
        else:
            kwargs.update(tls_context=ctx, require_starttls=True)
    if a.user:
        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == a.user
                and auth_data.password.decode() == a.password
            )
            print(f"AUTH {mechanism} {'ok' if ok else 'failed'}", flush=True)
            return AuthResult(success=ok, handled=False)

        # aiosmtpd counts only STARTTLS as TLS; an implicit-TLS session is encrypted too.
        kwargs.update(authenticator=authenticator, auth_require_tls=bool(a.cert) and not a.implicit)
        if a.only_mechanism:
            kwargs["auth_exclude_mechanism"] = [
                m for m in ("PLAIN", "LOGIN") if m != a.only_mechanism
            ]
    controller = Controller(
        Handler(a.pipelining),
        hostname="127.0.0.1",
        port=a.port,
        server_hostname="relay.test",
        ready_timeout=10,
        **kwargs,
    )
    controller.start()
    print("READY", flush=True)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(stop.wait())
    controller.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
