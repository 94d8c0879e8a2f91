#!/usr/bin/env python3
"""Cross-tenant probe for tests/ops/test_ops_tenant_matrix.sh (issue 14).

Speaks the protocol of docs/PROTOCOL.md by hand (u32 frame length, u32
envelope length, protobuf envelope; plaintext or TLS, principal by API key
or by client certificate) and sends each group and topic request twice:
once naming another tenant's object (GROUP, TOPIC) and once naming objects
that exist nowhere (GHOST_GROUP, GHOST_TOPIC, of the same lengths). For
each request it prints one line:

    OP error=N same=0|1 msg="..."

same=1 when the two answers are byte for byte equal once the ghost names
are replaced by the real ones (correlation ids are the same on purpose),
so an answer that differs in any field (error code, message, a body)
leaks the object's existence. error=0 means the request was allowed.
Destructive requests (reset, delete) come last.

usage: tenant_probe.py HOST:PORT [--ca CA --cert CERT --certkey KEY]
                       [--api-key KEY] GROUP GHOST_GROUP TOPIC GHOST_TOPIC
"""
import argparse, os, socket, ssl, struct, sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vwire import call as vcall, field as f  # noqa: E402


class Conn:
    def __init__(self, addr, a):
        host, port = addr.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=30)
        if a.ca:
            ctx = ssl.create_default_context(cafile=a.ca)
            if a.cert:
                ctx.load_cert_chain(a.cert, a.certkey)
            s = ctx.wrap_socket(s, server_hostname=host)
        self.s = s
        self.corr = 0

    def call(self, body_num, body):
        """(error, message, raw envelope) of one request."""
        self.corr += 1
        # a fixed correlation id: answers compare bytewise
        return vcall(self.s, 7, body_num, body)


def requests(g, t):
    """(op, envelope body field, body) naming group g and topic t."""
    m = 1  # a member id; another tenant's members are as unknown as anyone's
    rng = f(1, t) + f(2, 0) + f(3, 0) + f(4, 1)
    return [
        ("metadata", 101, f(1, t)),
        ("describe_topic", 105, f(1, t)),
        ("list_offsets", 109, f(1, f(1, t) + f(2, 0))),
        ("fetch", 108, f(1, 0) + f(2, 1) + f(4, f(1, t) + f(2, 0) + f(3, 0))),
        ("create_group", 120, f(1, "probe-" + g) + f(2, f(2, t))),
        ("describe_group", 123, f(1, g)),
        ("group_pending", 124, f(1, g)),
        ("join", 126, f(1, g) + f(2, "probe") + f(3, t)),
        ("heartbeat", 127, f(1, g) + f(2, m)),
        ("group_fetch", 129, f(1, g) + f(2, m) + f(3, 1)),
        ("ack", 130, f(1, g) + f(2, m) + f(3, rng)),
        ("nack", 131, f(1, g) + f(2, m) + f(3, t) + f(4, 0) + f(5, 0)),
        ("extend", 132, f(1, g) + f(2, m) + f(3, rng)),
        ("term", 133, f(1, g) + f(2, m) + f(3, t) + f(4, 0) + f(5, 0)),
        ("leave", 128, f(1, g) + f(2, m)),
        ("reset_group", 125, f(1, g)),
        ("delete_group", 121, f(1, g)),
        ("delete_topic", 103, f(1, t)),
    ]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("addr")
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--certkey")
    p.add_argument("--api-key")
    p.add_argument("group")
    p.add_argument("ghost_group")
    p.add_argument("topic")
    p.add_argument("ghost_topic")
    a = p.parse_args()
    if len(a.group) != len(a.ghost_group) or len(a.topic) != len(a.ghost_topic):
        sys.exit("tenant_probe: ghost names must be as long as the real ones")
    c = Conn(a.addr, a)
    c.call(100, f(1, 1) + f(2, 1) + f(3, "tenant_probe"))
    if a.api_key:
        err, msg, _ = c.call(160, f(1, a.api_key))
        if err:
            sys.exit("tenant_probe: authentication failed: %d %s" % (err, msg))
    real = requests(a.group, a.topic)
    ghost = requests(a.ghost_group, a.ghost_topic)
    for (op, num, body), (_, gnum, gbody) in zip(real, ghost):
        e1, m1, r1 = c.call(num, body)
        e2, _, r2 = c.call(gnum, gbody)
        r2 = r2.replace(a.ghost_group.encode(), a.group.encode())
        r2 = r2.replace(a.ghost_topic.encode(), a.topic.encode())
        print('%s error=%d ghost_error=%d same=%d msg="%s"' %
              (op, e1, e2, int(r1 == r2), m1.replace('"', "'")))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
