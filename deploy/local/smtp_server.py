"""A real SMTP server for modelwatch's e-mail tests (aiosmtpd), started by smtp-start.sh.

Listens on 127.0.0.1 only:
  --port P       plain SMTP that offers STARTTLS (with --cert/--key); STARTTLS is optional
  --tls-port Q   implicit TLS ("SMTPS") when given
Every accepted message is stored as DIR/messages/<ns>-<n>.eml (written to DIR/tmp first and
renamed, so a reader never sees a partial file), with test headers prepended:
  X-Test-Envelope-From, X-Test-Envelope-To, X-Test-TLS (TLS version or "no"), X-Test-Auth (user), X-Test-Helo (the EHLO name).
Recipients whose local part starts with "defer-" get 451 (transient), "reject-" get 550
(permanent), so clients can test their error handling. --auth USER:PASSWORD requires AUTH
(PLAIN/LOGIN); on the plain port only after STARTTLS.
Writes DIR/ready ("port tls_port") once listening; SIGTERM/SIGINT stop it.
"""

import argparse
import asyncio
import itertools
import os
import signal
import ssl
import sys
import time

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Store:
    def __init__(self, directory: str) -> None:
        self.messages = os.path.join(directory, "messages")
        self.tmp = os.path.join(directory, "tmp")
        os.makedirs(self.messages, exist_ok=True)
        os.makedirs(self.tmp, exist_ok=True)
        self.counter = itertools.count(1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("reject-"):
            return "550 5.1.1 mailbox unavailable (test rejection)"
        if local.startswith("defer-"):
            return "451 4.3.0 try again later (test deferral)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        ssl_object = server.transport.get_extra_info("ssl_object")
        tls = ssl_object.version() if ssl_object is not None else "no"
        user = ""
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            user = session.auth_data.login.decode("utf-8", "replace")
        head = (
            f"X-Test-Envelope-From: {envelope.mail_from}\r\n"
            f"X-Test-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
            f"X-Test-TLS: {tls}\r\n"
            f"X-Test-Auth: {user}\r\n"
            f"X-Test-Helo: {session.host_name or ''}\r\n"
        ).encode()
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode()
        name = f"{time.time_ns()}-{next(self.counter)}.eml"
        tmp = os.path.join(self.tmp, name)
        with open(tmp, "wb") as f:
            f.write(head + content)
        os.rename(tmp, os.path.join(self.messages, name))
        print(f"stored {name} from {envelope.mail_from} to {envelope.rcpt_tos} tls={tls}", flush=True)
        return f"250 OK stored as {name}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls-port", type=int, default=0)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--auth", default="", help="USER:PASSWORD")
    args = ap.parse_args()

    ready = os.path.join(args.dir, "ready")
    if os.path.exists(ready):
        os.remove(ready)
    store = Store(args.dir)

    ctx = None
    if args.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)

    authenticator = None
    if args.auth:
        user, _, password = args.auth.partition(":")

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == user
                and auth_data.password.decode() == password
            )
            # handled=False: aiosmtpd answers 535 itself (its default is to leave that to us).
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

    def smtp(implicit_tls: bool) -> SMTP:
        return SMTP(
            store,
            hostname="modelwatch-test-smtp",
            tls_context=None if implicit_tls else ctx,
            require_starttls=False,
            authenticator=authenticator,
            auth_required=bool(args.auth),
            # On the implicit-TLS port the connection is encrypted from the start.
            auth_require_tls=not implicit_tls,
        )

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    servers = [loop.run_until_complete(loop.create_server(lambda: smtp(False), "127.0.0.1", args.port))]
    if args.tls_port:
        if ctx is None:
            print("--tls-port needs --cert and --key", file=sys.stderr)
            return 2
        servers.append(
            loop.run_until_complete(loop.create_server(lambda: smtp(True), "127.0.0.1", args.tls_port, ssl=ctx))
        )
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    with open(ready + ".tmp", "w") as f:
        f.write(f"{args.port} {args.tls_port}\n")
    os.rename(ready + ".tmp", ready)
    print(f"listening on 127.0.0.1:{args.port} (STARTTLS: {ctx is not None}), implicit TLS port {args.tls_port or '-'}", flush=True)
    try:
        loop.run_forever()
    finally:
        for s in servers:
            s.close()
        if os.path.exists(ready):
            os.remove(ready)
    return 0


if __name__ == "__main__":
    sys.exit(main())
