"""A real SMTP server for development and the tests: it accepts mail and writes each message to a folder.

Every accepted message becomes two files in --dir, written atomically (a temporary name, then a rename):
<n>.eml, the message exactly as received, and <n>.json with the envelope and the decoded parts the tests read
(mail_from, rcpt_tos, subject, from, to, message_id, content_language, text, html, and attachments: each file's
filename, content_type and base64 content). Recipients at two reserved
domains exercise failures: anything @refused.test is refused for good (550), anything @tempfail.test for now (451).
With --username/--password it offers AUTH PLAIN and LOGIN (also without TLS: a local sink only) and accepts only those
credentials; mail without AUTH is accepted too, so the demo works either way. With --tls-cert/--tls-key it offers
STARTTLS (not required), and each record says whether the message came over TLS. It prints "listening" once ready.
"""

import argparse
import asyncio
import base64
import email
import email.policy
import itertools
import json
import os
import signal
import ssl
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    def __init__(self, folder):
        self.folder = folder
        self.counter = itertools.count(1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        domain = address.rsplit("@", 1)[-1].lower()
        if domain == "refused.test":
            return "550 5.1.1 mailbox unavailable"
        if domain == "tempfail.test":
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        attachments = [
            {
                "filename": part.get_filename(),
                "content_type": part.get_content_type(),
                "content": base64.b64encode(part.get_payload(decode=True) or b"").decode(),
            }
            for part in message.iter_attachments()
        ]
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "authenticated_as": getattr(session, "authenticated_as", None),
            "tls": session.ssl is not None,
            "subject": str(message.get("subject", "")),
            "from": str(message.get("from", "")),
            "to": str(message.get("to", "")),
            "message_id": str(message.get("message-id", "")),
            "content_language": str(message.get("content-language", "")),
            "text": text.get_content().replace("\r\n", "\n") if text is not None else None,
            "html": html.get_content().replace("\r\n", "\n") if html is not None else None,
            "attachments": attachments,
            "received_at": time.time(),
        }
        name = f"{time.time_ns()}-{os.getpid()}-{next(self.counter)}"
        for suffix, data in ((".eml", raw), (".json", json.dumps(record).encode())):
            tmp = os.path.join(self.folder, f".{name}{suffix}.tmp")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(self.folder, name + suffix))
        return "250 Message accepted for delivery"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--tls-cert", help="offer STARTTLS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="... and its private key (PEM)")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == args.username
            and auth_data.password.decode() == args.password
        )
        if ok:
            session.authenticated_as = args.username
        return AuthResult(success=ok)

    kwargs = {}
    if args.username:
        kwargs.update(authenticator=authenticator, auth_require_tls=False, auth_required=False)
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        kwargs.update(tls_context=context, require_starttls=False)
    controller = Controller(Sink(args.dir), hostname=args.host, port=args.port, **kwargs)
    controller.start()
    print(f"listening on {args.host}:{args.port}, writing to {args.dir}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(stop.wait())
    controller.stop()


if __name__ == "__main__":
    main()
