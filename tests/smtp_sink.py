"""An SMTP sink for the tests: accepts every message on 127.0.0.1 and writes each one to a file.

    python tests/smtp_sink.py PORT DIR

PORT 0 picks a free port. Once listening it prints `READY <port>` on stdout. Each message
becomes DIR/<n>.json (written to a temporary name, then renamed, so a reader never sees half a
file) with the envelope (`mail_from`, `rcpt_tos`), the decoded headers `from`, `to`, `subject`,
the decoded text `body` and the `raw` message. It exits when its stdin closes (the test that
started it is gone) or on SIGTERM. Needs `aiosmtpd` (scripts/test.sh installs it in a venv).
"""

import asyncio
import email
import email.policy
import itertools
import json
import os
import signal
import sys

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.counter = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", errors="replace")
        message = email.message_from_string(raw, policy=email.policy.default)
        part = message.get_body(preferencelist=("plain",)) or message
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "from": str(message.get("from", "")),
            "to": str(message.get("to", "")),
            "subject": str(message.get("subject", "")),
            "content_type": message.get_content_type(),
            "body": part.get_content(),
            "raw": raw,
        }
        n = next(self.counter)
        final = os.path.join(self.directory, f"{n:06}.json")
        partial = final + ".part"
        with open(partial, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(partial, final)
        return "250 OK"


async def main(port, directory):
    os.makedirs(directory, exist_ok=True)
    loop = asyncio.get_running_loop()
    handler = Sink(directory)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.localhost"), host="127.0.0.1", port=port
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)

    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    # The parent closing our stdin (or dying) ends the sink.
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(4096) else None)
    await stop.wait()
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: smtp_sink.py PORT DIR")
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
