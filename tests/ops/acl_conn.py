#!/usr/bin/env python3
"""One open, authenticated protocol connection while an admin changes the
security store over the network (`verity acl|role|auth --http`, issue 14):
each step makes a change through the admin port, then sends DescribeTopic
on the SAME connection and compares the answer's error code. Prints one
"ok: ..." or "FAIL: ..." line per step (tests/ops/test_ops_acl_meta.sh
counts them).

usage: acl_conn.py BROKER HTTP VERITY ADMIN_KEY CLIENT_KEY CLIENT_KEY_ID
The client key is acme/svc with no rule of its own at the start; the topics
orders, secret and frozen exist in tenant acme; auth_file denies svc
describe on frozen.
"""
import os, socket, struct, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vwire import call as vcall, field as f  # noqa: E402

ERR_OK, ERR_AUTH, ERR_DENIED = 0, 24, 25

broker, http, verity, kadm, kcli, kcli_id = sys.argv[1:7]
fails = 0


class Conn:
    def __init__(self):
        host, port = broker.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=30)
        self.corr = 0
        self.call(100, f(1, 1) + f(2, 1) + f(3, b"acl_conn"))  # Hello
        err, msg = self.call(160, f(1, kcli))                   # Authenticate
        if err:
            raise SystemExit("FAIL: authenticate: %d %s" % (err, msg))

    def call(self, body_num, body):
        self.corr += 1
        return vcall(self.s, self.corr, body_num, body)[:2]

    def describe(self, topic):
        try:
            return self.call(105, f(1, topic))[0]
        except (ConnectionError, OSError):
            return "closed"


def admin(*args, key=kadm):
    env = dict(os.environ, VERITY_API_KEY=key)
    r = subprocess.run([verity, *args[:1], "--http", http, *args[1:]], env=env,
                       capture_output=True, text=True, timeout=30)
    return r.returncode, r.stderr.strip()


def step(what, got, want, alt=None):
    """want: the answer expected; alt: another one accepted."""
    global fails
    ok = got == want or (alt is not None and got == alt)
    if not ok:
        fails += 1
    print("%s: %s (got %s, want %s)" % ("ok" if ok else "FAIL", what, got, want), flush=True)


c = Conn()
step("no rule: describe orders denied", c.describe("orders"), ERR_DENIED)
rc, _ = admin("acl", "add", "--tenant", "acme", "--principal", "svc", "--resource",
              "topic:orders", "--ops", "describe")
step("acl add over the network: rc", rc, 0)
step("open connection gains access (allow by principal)", c.describe("orders"), ERR_OK)

step("secret denied before the role", c.describe("secret"), ERR_DENIED)
rc1, _ = admin("acl", "add", "--tenant", "acme", "--role", "readers", "--resource",
               "topic:secret", "--ops", "describe")
step("a rule for a role the principal lacks grants nothing", c.describe("secret"), ERR_DENIED)
rc2, _ = admin("role", "grant", "--tenant", "acme", "--principal", "svc", "--role", "readers")
step("role rule and role grant: rc", (rc1, rc2), (0, 0))
step("role grant: open connection gains access", c.describe("secret"), ERR_OK)

rc, _ = admin("acl", "add", "--tenant", "acme", "--principal", "*", "--resource",
              "topic:secret", "--ops", "describe", "--deny")
step("deny for '*' wins over the role's allow", (rc, c.describe("secret")), (0, ERR_DENIED))
rc, _ = admin("acl", "add", "--tenant", "acme", "--role", "readers", "--resource",
              "topic:orders", "--ops", "describe", "--deny")
step("deny for a role wins over the principal's own allow", (rc, c.describe("orders")),
     (0, ERR_DENIED))
rc, _ = admin("acl", "remove", "--tenant", "acme", "--role", "readers", "--resource",
              "topic:orders", "--ops", "describe", "--deny")
step("deny removed: access back on the open connection", (rc, c.describe("orders")), (0, ERR_OK))
rc, _ = admin("role", "revoke", "--tenant", "acme", "--principal", "svc", "--role", "readers")
step("role revoked: the role's allow no longer applies", (rc, c.describe("secret")),
     (0, ERR_DENIED))

rc, _ = admin("acl", "add", "--tenant", "acme", "--principal", "svc", "--resource",
              "topic:frozen", "--ops", "describe")
step("auth_file's deny wins over a network allow", (rc, c.describe("frozen")), (0, ERR_DENIED))
rc, err = admin("acl", "remove", "--tenant", "acme", "--principal", "svc", "--resource",
                "topic:frozen", "--ops", "describe", "--deny")
step("removing an auth_file rule over the network: refused EFILE", (rc, "EFILE" in err),
     (1, True))

rc, err = admin("acl", "add", "--tenant", "acme", "--principal", "svc", "--resource",
                "topic:*", "--ops", "all", key=kcli)
step("non-admin key: refused EDENIED", (rc, "EDENIED" in err), (1, True))
rc, err = admin("acl", "add", "--tenant", "acme", "--principal", "svc", "--resource",
                "topic:*", "--ops", "all", key="vk_0000000000000000_" + "0" * 64)
step("unknown key: refused EAUTH", (rc, "EAUTH" in err), (1, True))
step("refused changes changed nothing", c.describe("frozen"), ERR_DENIED)

rc, _ = admin("auth", "key", "revoke", kcli_id)
step("key revoke over the network: rc", rc, 0)
step("revoked key: the open connection is refused", c.describe("orders"), ERR_AUTH, "closed")
sys.exit(1 if fails else 0)
