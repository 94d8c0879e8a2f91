/*
 * verity share: the owner's and the recipient's side of the sharing gateway
 * (docs/SHARING.md).
 *
 *   owner:      init, create, list, show, revoke, audit, reveal, detokenize
 *   recipient:  fetch, verify, decrypt, check-reveal (tools/cmd_share_fetch.c)
 *
 * The owner's commands talk to the broker directly (the shares and audit
 * topics) and need the gateway's key directory for what they sign or
 * derive; the gateway itself serves recipients.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "consumer/share/share.h"
#include "tools/cmds.h"

#define DEFAULT_KEYS "./gateway-keys"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: verity share <command> [options]\n"
            "owner:\n"
            "  init --keys DIR                       gateway.key/.pub (Ed25519) and gateway.secret\n"
            "  create --topic T [--topic T2] --field /p=OP[:ARGS]... [--where PRED]...\n"
            "         [--from-offset N] [--to-offset N] [--from-time T] [--to-time T]\n"
            "         (--expires-in 7d | --expires-at TIME) [--max-uses N]\n"
            "         --recipient NAME [--contact C] [--purpose P] [--recipient-key X25519.pub]\n"
            "         [--tenant T] [--issuer I] --endpoint https://HOST:PORT/v1 [--profile FILE]\n"
            "  list [--json] | show ID [--json] | revoke ID [--reason R]\n"
            "  audit [--json] [--share ID] [--event E] [--outcome O]\n"
            "  reveal --share ID --pos TOPIC/PART/OFFSET --path /p  (original + salt, JSON)\n"
            "  detokenize --share ID TOKEN                          (tokenize -> original)\n"
            "recipient:\n"
            "  fetch PROFILE -o EXPORT [--cacert CA.pem] [--resume] [--topic T]\n"
            "  verify EXPORT --key GATEWAY.pub [--log-key LOG.pub] [--log-vkey VKEY] [--require-proofs] [--json]\n"
            "  decrypt EXPORT --key RECIPIENT.key -o OUT\n"
            "  check-reveal EXPORT REVEAL.json\n"
            "common: --broker HOST:PORT (owner), --keys DIR (default %s)\n"
            "OP: keep drop hash tokenize encrypt replace:V mask:last:N mask:first:N\n"
            "    generalise:day|month|year|bucket:W|ranges:0-17=child,18-=adult\n"
            "    date_shift:/entity:DAYS\n"
            "PRED: /p==V  /p!=V  /p<V  /p<=V  /p>V  /p>=V  '/p exists'\n",
            DEFAULT_KEYS);
}

struct opts {
    const char *broker, *keys;
    bool json;
};

static int key_path(const char *dir, const char *name, char *out, size_t cap)
{
    return (size_t)snprintf(out, cap, "%s/%s", dir, name) < cap ? 0 : -1;
}

static int load_secret(const char *dir, uint8_t out[32])
{
    char p[4200], *s = NULL;
    size_t n;
    if (key_path(dir, "gateway.secret", p, sizeof p))
        return VERITY_EINVAL;
    int rc = sh_read_file(p, 256, &s, &n);
    if (rc)
        return rc;
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    rc = sh_unhex(s, out, 32);
    free(s);
    return rc;
}

static struct verity_client *connect_admin(const char *broker)
{
    struct verity_conn_config cc;
    verity_conn_config_default(&cc);
    cc.broker = verity_broker_resolve(broker);
    struct verity_client *c = NULL;
    int rc = verity_client_new(&cc, &c);
    if (!rc)
        rc = verity_client_connect(c, 10000);
    if (rc) {
        fprintf(stderr, "verity share: broker %s: %s\n", cc.broker, verity_strerror(rc));
        verity_client_free(c);
        return NULL;
    }
    return c;
}

static int load_db(const char *broker, struct share_db *db)
{
    struct verity_client *c = connect_admin(broker);
    if (!c)
        return -ECONNREFUSED;
    struct verity_consumer *cons = NULL;
    share_db_init(db);
    int rc = share_topics_ensure(c);
    if (!rc)
        rc = share_db_catch_up(db, c, &cons, verity_broker_resolve(broker), 20000);
    verity_consumer_free(cons);
    verity_client_free(c);
    if (rc)
        fprintf(stderr, "verity share: cannot read %s: %s\n", SHARE_STATE_TOPIC,
                verity_strerror(rc));
    return rc;
}

static int append(const char *broker, const char *topic, json_t *rec)
{
    struct verity_client *c = connect_admin(broker);
    int rc = c ? share_topics_ensure(c) : -ECONNREFUSED;
    verity_client_free(c);
    if (rc)
        return rc;
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn.broker = verity_broker_resolve(broker);
    pc.idempotence = true;
    struct verity_producer *p = NULL;
    rc = verity_producer_new(&pc, &p);
    if (!rc)
        rc = share_append(p, topic, rec);
    verity_producer_free(p, 5000);
    return rc;
}

/* Whether the caller may see every topic of the share: each is described
 * as the caller (with tenants: in its tenant, so another tenant's topic is
 * refused exactly like a missing one; issue 14). */
static int topics_visible(const char *broker, json_t *topics)
{
    struct verity_client *c = connect_admin(broker);
    if (!c)
        return CMD_EXIT_FAIL;
    int rc = 0;
    size_t i;
    json_t *t;
    json_array_foreach(topics, i, t) {
        struct verity_topic_info *ti = NULL;
        int e = verity_topic_describe(c, json_string_value(t), &ti);
        verity_topic_info_free(ti, 1);
        if (e) {
            fprintf(stderr, "verity share create: topic %s: %s\n", json_string_value(t),
                    verity_strerror(e));
            rc = CMD_EXIT_FAIL;
            break;
        }
    }
    verity_client_free(c);
    return rc;
}

/* ---- init ------------------------------------------------------------------------ */

static int write_pem_key(EVP_PKEY *k, const char *path, bool priv)
{
    FILE *f = fopen(path, "wx");
    if (!f)
        return -errno;
    if (priv)
        fchmod(fileno(f), 0600);
    int ok = priv ? PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL)
                  : PEM_write_PUBKEY(f, k);
    if (fclose(f) != 0 || !ok)
        return -EIO;
    return 0;
}

static int share_init(struct opts *o)
{
    char kp[4200], pp[4200], sp[4200], hex[65];
    uint8_t secret[32];
    if (mkdir(o->keys, 0700) != 0 && errno != EEXIST) {
        perror(o->keys);
        return CMD_EXIT_FAIL;
    }
    if (key_path(o->keys, "gateway.key", kp, sizeof kp) ||
        key_path(o->keys, "gateway.pub", pp, sizeof pp) ||
        key_path(o->keys, "gateway.secret", sp, sizeof sp))
        return CMD_EXIT_USAGE;
    if (access(kp, F_OK) == 0 || access(sp, F_OK) == 0) {
        fprintf(stderr, "verity share init: %s already holds gateway keys (never overwritten)\n",
                o->keys);
        return CMD_EXIT_FAIL;
    }
    EVP_PKEY *k = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
    int rc = !ctx || EVP_PKEY_keygen_init(ctx) != 1 || EVP_PKEY_keygen(ctx, &k) != 1 ? -EIO : 0;
    EVP_PKEY_CTX_free(ctx);
    if (!rc)
        rc = write_pem_key(k, kp, true);
    if (!rc)
        rc = write_pem_key(k, pp, false);
    if (!rc)
        rc = sh_random(secret, 32);
    if (!rc) {
        sh_hex(secret, 32, hex);
        hex[64] = '\n';
        rc = sh_write_file(sp, hex, 65, 0600);
    }
    EVP_PKEY_free(k);
    if (rc) {
        fprintf(stderr, "verity share init: %s\n", verity_strerror(rc));
        return CMD_EXIT_FAIL;
    }
    printf("wrote %s (keep secret), %s (give to recipients), %s (keep secret)\n", kp, pp, sp);
    return CMD_EXIT_OK;
}

/* ---- create ---------------------------------------------------------------------- */

static int read_x25519_pub(const char *path, uint8_t out[32])
{
    EVP_PKEY *k = NULL;
    int rc = sh_load_public(path, &k);
    if (!rc && EVP_PKEY_get_base_id(k) != EVP_PKEY_X25519)
        rc = VERITY_EINVAL;
    if (!rc)
        rc = sh_raw_public(k, out);
    EVP_PKEY_free(k);
    return rc;
}

static int share_create(struct opts *o, int argc, char **argv)
{
    json_t *topics = json_array(), *fields = json_array(), *filter = json_array();
    const char *recipient = NULL, *contact = NULL, *purpose = NULL, *rkey = NULL,
               *tenant = NULL, *issuer = getenv("USER"), *endpoint = NULL, *profile = NULL;
    int64_t from_off = -1, to_off = -1, from_t = INT64_MIN, to_t = INT64_MAX, exp = 0,
            now = sh_now_ms();
    long long max_uses = 0;
    int rc = CMD_EXIT_USAGE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t d;
        if (!v) {
            fprintf(stderr, "verity share create: %s needs a value\n", a);
            goto out;
        }
        i++;
        if (strcmp(a, "--topic") == 0) json_array_append_new(topics, json_string(v));
        else if (strcmp(a, "--field") == 0) json_array_append_new(fields, json_string(v));
        else if (strcmp(a, "--where") == 0) json_array_append_new(filter, json_string(v));
        else if (strcmp(a, "--from-offset") == 0) from_off = strtoll(v, NULL, 10);
        else if (strcmp(a, "--to-offset") == 0) to_off = strtoll(v, NULL, 10);
        else if (strcmp(a, "--from-time") == 0 || strcmp(a, "--to-time") == 0 ||
                 strcmp(a, "--expires-at") == 0) {
            if (sh_time_parse(v, &d)) {
                fprintf(stderr, "verity share create: %s: '%s' is not an RFC 3339 time\n", a, v);
                goto out;
            }
            *(a[2] == 'f' ? &from_t : a[2] == 't' ? &to_t : &exp) = d;
        } else if (strcmp(a, "--expires-in") == 0) {
            if (sh_duration_parse(v, &d)) {
                fprintf(stderr, "verity share create: --expires-in '%s' (e.g. 90s, 30m, 12h, 7d)\n", v);
                goto out;
            }
            exp = now + d;
        } else if (strcmp(a, "--max-uses") == 0) max_uses = strtoll(v, NULL, 10);
        else if (strcmp(a, "--recipient") == 0) recipient = v;
        else if (strcmp(a, "--contact") == 0) contact = v;
        else if (strcmp(a, "--purpose") == 0) purpose = v;
        else if (strcmp(a, "--recipient-key") == 0) rkey = v;
        else if (strcmp(a, "--tenant") == 0) tenant = v;
        else if (strcmp(a, "--issuer") == 0) issuer = v;
        else if (strcmp(a, "--endpoint") == 0) endpoint = v;
        else if (strcmp(a, "--profile") == 0) profile = v;
        else {
            fprintf(stderr, "verity share create: unknown option %s\n", a);
            goto out;
        }
    }
    if (!endpoint || exp == 0 || !recipient) {
        fprintf(stderr, "verity share create: --endpoint, --expires-in/--expires-at and "
                        "--recipient are required\n");
        goto out;
    }
    uint8_t id[16];
    char ids[SHARE_ID_LEN + 1], keyb[48];
    uint8_t xk[32];
    json_t *key = json_null();
    if (sh_random(id, sizeof id))
        goto out;
    sh_hex(id, sizeof id, ids);
    if (rkey) {
        if (read_x25519_pub(rkey, xk)) {
            fprintf(stderr, "verity share create: %s is not an X25519 public key (PEM)\n", rkey);
            goto out;
        }
        sh_b64url_enc(xk, 32, keyb);
        key = json_string(keyb);
    }
    json_t *j = json_pack("{s:s, s:s?, s:s?, s:O, s:I, s:I, s:I, s:I, s:O, s:O, s:I, s:I, s:I, "
                          "s:i, s:{s:s, s:s?, s:s?, s:o}}",
                          "id", ids, "tenant", tenant, "issuer", issuer, "topics", topics,
                          "from_offset", (json_int_t)from_off, "to_offset", (json_int_t)to_off,
                          "from_time_ms", (json_int_t)from_t, "to_time_ms", (json_int_t)to_t,
                          "filter", filter, "fields", fields, "created_ms", (json_int_t)now,
                          "expires_ms", (json_int_t)exp, "max_uses", (json_int_t)max_uses,
                          "policy_version", SHARE_POLICY_VERSION, "recipient", "name", recipient,
                          "contact", contact, "purpose", purpose, "x25519", key);
    if (from_off < 0)
        json_object_set_new(j, "from_offset", json_null());
    if (to_off < 0)
        json_object_set_new(j, "to_offset", json_null());
    if (from_t == INT64_MIN)
        json_object_set_new(j, "from_time_ms", json_null());
    if (to_t == INT64_MAX)
        json_object_set_new(j, "to_time_ms", json_null());
    struct share_spec s;
    char err[256];
    if (!j || share_spec_from_json(j, &s, err, sizeof err)) {
        fprintf(stderr, "verity share create: %s\n", j ? err : "out of memory");
        json_decref(j);
        rc = CMD_EXIT_USAGE;
        goto out;
    }
    json_decref(j);
    char kp[4200], *token = NULL, *prof = NULL;
    EVP_PKEY *sk = NULL;
    if ((rc = topics_visible(o->broker, topics)))
        goto done;
    rc = CMD_EXIT_FAIL;
    if (key_path(o->keys, "gateway.key", kp, sizeof kp) || sh_load_private(kp, &sk)) {
        fprintf(stderr, "verity share create: cannot load %s/gateway.key (verity share init)\n",
                o->keys);
        goto done;
    }
    if (share_token_issue(sk, &s, &token)) {
        fprintf(stderr, "verity share create: cannot sign the token\n");
        goto done;
    }
    json_t *rec = json_pack("{s:s, s:o}", "type", "share", "share", share_spec_to_json(&s));
    int e = append(o->broker, SHARE_STATE_TOPIC, rec);
    json_decref(rec);
    if (e) {
        fprintf(stderr, "verity share create: cannot record the share: %s\n", verity_strerror(e));
        goto done;
    }
    json_t *a = share_audit_new("share_create", "ok", &s, NULL, now);
    e = a ? append(o->broker, SHARE_AUDIT_TOPIC, a) : -ENOMEM;
    json_decref(a);
    if (e) {
        fprintf(stderr, "verity share create: cannot audit the creation: %s\n", verity_strerror(e));
        goto done;
    }
    prof = share_profile_dump(endpoint, token, s.expires_ms);
    if (profile && (!prof || sh_write_file(profile, prof, strlen(prof), 0600))) {
        fprintf(stderr, "verity share create: cannot write %s\n", profile);
        goto done;
    }
    if (o->json) {
        json_t *out = json_pack("{s:s, s:s, s:s?}", "share", s.id, "token", token, "profile",
                                profile);
        char *t = json_dumps(out, JSON_COMPACT);
        printf("%s\n", t);
        free(t);
        json_decref(out);
    } else {
        printf("share %s\n%s\n", s.id, token);
        if (profile)
            printf("profile written to %s\n", profile);
    }
    rc = CMD_EXIT_OK;
done:
    free(token);
    free(prof);
    EVP_PKEY_free(sk);
    share_spec_deinit(&s);
out:
    json_decref(topics);
    json_decref(fields);
    json_decref(filter);
    return rc;
}

/* ---- list, show, revoke ------------------------------------------------------------- */

static json_t *entry_json(const struct share_entry *e)
{
    json_t *j = share_spec_to_json(&e->spec);
    char t[32];
    sh_time_fmt(e->spec.expires_ms, t);
    json_object_set_new(j, "expirationTime", json_string(t));
    json_object_set_new(j, "uses", json_integer(e->uses));
    json_object_set_new(j, "revoked", json_boolean(e->revoked));
    if (e->revoked)
        json_object_set_new(j, "revoke_reason", json_string(e->revoke_reason));
    return j;
}

static int share_list(struct opts *o, const char *only)
{
    struct share_db db;
    if (load_db(o->broker, &db))
        return CMD_EXIT_FAIL;
    json_t *arr = json_array();
    int found = 0;
    int64_t now = sh_now_ms();
    if (!o->json && !only)
        printf("%-32s  %-20s  %-8s  %-20s  %s\n", "SHARE", "RECIPIENT", "STATE", "EXPIRES", "USES");
    for (struct share_entry *e = db.head; e; e = e->next) {
        if (only && strcmp(only, e->spec.id) != 0)
            continue;
        found++;
        if (o->json || only) {
            json_array_append_new(arr, entry_json(e));
            continue;
        }
        char t[32], uses[32];
        sh_time_fmt(e->spec.expires_ms, t);
        if (e->spec.max_uses)
            snprintf(uses, sizeof uses, "%u/%u", e->uses, e->spec.max_uses);
        else
            snprintf(uses, sizeof uses, "%u", e->uses);
        printf("%-32s  %-20.20s  %-8s  %-20s  %s\n", e->spec.id, e->spec.rcpt.name,
               e->revoked ? "revoked" : e->spec.expires_ms <= now ? "expired" : "active", t, uses);
    }
    if (o->json || only) {
        char *s = json_dumps(only ? json_array_get(arr, 0) : arr, JSON_INDENT(2));
        if (s && (found || !only))
            printf("%s\n", s);
        free(s);
    }
    json_decref(arr);
    share_db_deinit(&db);
    if (only && !found) {
        fprintf(stderr, "verity share show: no share %s\n", only);
        return CMD_EXIT_FAIL;
    }
    return CMD_EXIT_OK;
}

static int share_revoke(struct opts *o, const char *id, const char *reason)
{
    struct share_db db;
    if (load_db(o->broker, &db))
        return CMD_EXIT_FAIL;
    struct share_entry *e = share_db_find(&db, id);
    int rc = CMD_EXIT_FAIL;
    if (!e) {
        fprintf(stderr, "verity share revoke: no share %s\n", id);
        goto out;
    }
    json_t *r = json_pack("{s:s, s:s, s:s, s:I}", "type", "revoke", "share", id, "reason",
                          reason ? reason : "", "time_ms", (json_int_t)sh_now_ms());
    int e1 = append(o->broker, SHARE_STATE_TOPIC, r);
    json_decref(r);
    json_t *a = share_audit_new("share_revoke", "ok", &e->spec, NULL, sh_now_ms());
    if (a && reason)
        json_object_set_new(a, "reason", json_string(reason));
    int e2 = a ? append(o->broker, SHARE_AUDIT_TOPIC, a) : -ENOMEM;
    json_decref(a);
    if (e1 || e2) {
        fprintf(stderr, "verity share revoke: %s\n", verity_strerror(e1 ? e1 : e2));
        goto out;
    }
    printf("revoked %s\n", id);
    rc = CMD_EXIT_OK;
out:
    share_db_deinit(&db);
    return rc;
}

/* ---- audit --------------------------------------------------------------------------- */

static bool field_is(const json_t *a, const char *k, const char *want)
{
    const char *v = json_string_value(json_object_get(a, k));
    return !want || (v && strcmp(v, want) == 0);
}

static int share_audit(struct opts *o, const char *share, const char *event, const char *outcome)
{
    struct verity_client *c = connect_admin(o->broker);
    if (!c)
        return CMD_EXIT_FAIL;
    struct verity_offsets off;
    struct verity_consumer *cons = NULL;
    int rc = share_topics_ensure(c);
    if (!rc)
        rc = verity_list_offsets(c, SHARE_AUDIT_TOPIC, 0, VERITY_OFFSET_LATEST, 0, &off);
    json_t *arr = json_array();
    if (!rc && off.high_watermark > 0) {
        struct verity_consumer_config cc;
        verity_consumer_config_default(&cc);
        cc.conn.broker = verity_broker_resolve(o->broker);
        cc.fetch_max_wait_ms = 50;
        rc = verity_consumer_new(&cc, &cons);
        if (!rc)
            rc = verity_consumer_assign(cons, SHARE_AUDIT_TOPIC, 0, VERITY_START_EARLIEST, 0);
        int64_t deadline = sh_now_ms() + 20000;
        while (!rc) {
            const struct verity_message *m;
            size_t n;
            uint64_t next = 0, hwm;
            if ((rc = verity_consumer_poll(cons, 100, &m, &n, NULL)))
                break;
            for (size_t i = 0; i < n; i++) {
                json_t *a = json_loadb(m[i].value, m[i].value_len > 0 ? (size_t)m[i].value_len : 0,
                                       0, NULL);
                if (a && field_is(a, "share", share) && field_is(a, "event", event) &&
                    field_is(a, "outcome", outcome)) {
                    json_object_set_new(a, "audit_offset", json_integer((json_int_t)m[i].offset));
                    json_array_append_new(arr, a);
                } else {
                    json_decref(a);
                }
            }
            if (verity_consumer_position(cons, SHARE_AUDIT_TOPIC, 0, &next, &hwm) == 0 &&
                next >= off.high_watermark)
                break;
            if (sh_now_ms() > deadline)
                rc = VERITY_ETIMEOUT;
        }
    }
    if (rc) {
        fprintf(stderr, "verity share audit: %s\n", verity_strerror(rc));
    } else if (o->json) {
        char *s = json_dumps(arr, JSON_INDENT(2));
        printf("%s\n", s ? s : "[]");
        free(s);
    } else {
        printf("%-20s  %-12s  %-14s  %-32s  %-16s  %s\n", "TIME", "EVENT", "OUTCOME", "SHARE",
               "CLIENT", "RECORDS");
        size_t i;
        json_t *a;
        json_array_foreach(arr, i, a) {
            const json_t *rc_ = json_object_get(a, "record_count");
            char recs[32] = "";
            if (rc_)
                snprintf(recs, sizeof recs, "%lld", (long long)json_integer_value(rc_));
            const char *sh = json_string_value(json_object_get(a, "share"));
            const char *cl = json_string_value(json_object_get(a, "client"));
            printf("%-20s  %-12s  %-14s  %-32s  %-16s  %s\n",
                   json_string_value(json_object_get(a, "time")),
                   json_string_value(json_object_get(a, "event")),
                   json_string_value(json_object_get(a, "outcome")), sh ? sh : "-",
                   cl ? cl : "-", recs);
        }
    }
    json_decref(arr);
    verity_consumer_free(cons);
    verity_client_free(c);
    return rc ? CMD_EXIT_FAIL : CMD_EXIT_OK;
}

/* ---- reveal, detokenize ---------------------------------------------------------------- */

static int read_record(const char *broker, const char *topic, uint32_t part, uint64_t off,
                       json_t **out)
{
    struct verity_consumer_config cc;
    verity_consumer_config_default(&cc);
    cc.conn.broker = verity_broker_resolve(broker);
    struct verity_consumer *c = NULL;
    int rc = verity_consumer_new(&cc, &c);
    if (!rc)
        rc = verity_consumer_assign(c, topic, part, VERITY_START_OFFSET, (int64_t)off);
    int64_t deadline = sh_now_ms() + 10000;
    *out = NULL;
    while (!rc && !*out) {
        const struct verity_message *m;
        size_t n;
        if ((rc = verity_consumer_poll(c, 200, &m, &n, NULL)))
            break;
        for (size_t i = 0; i < n && !*out; i++)
            if (m[i].offset == off) {
                *out = json_loadb(m[i].value, m[i].value_len > 0 ? (size_t)m[i].value_len : 0, 0,
                                  NULL);
                if (!*out)
                    rc = VERITY_EINVAL;
            } else if (m[i].offset > off) {
                rc = VERITY_ENOTFOUND;
            }
        if (!rc && !*out && sh_now_ms() > deadline)
            rc = VERITY_ETIMEOUT;
    }
    verity_consumer_free(c);
    return rc;
}

static int share_reveal(struct opts *o, const char *id, const char *pos, const char *path)
{
    char topic[256];
    unsigned part;
    unsigned long long off;
    int end = 0;
    const char *slash = pos ? strchr(pos, '/') : NULL;
    if (!id || !pos || !path || !slash || (size_t)(slash - pos) >= sizeof topic ||
        sscanf(slash + 1, "%u/%llu%n", &part, &off, &end) != 2 || slash[1 + end] != '\0') {
        fprintf(stderr, "verity share reveal: --share ID --pos TOPIC/PART/OFFSET --path /p\n");
        return CMD_EXIT_USAGE;
    }
    snprintf(topic, sizeof topic, "%.*s", (int)(slash - pos), pos);
    uint8_t secret[32];
    struct xf_keys k;
    if (load_secret(o->keys, secret) || xf_keys_derive(secret, id, &k)) {
        fprintf(stderr, "verity share reveal: cannot load %s/gateway.secret\n", o->keys);
        return CMD_EXIT_FAIL;
    }
    json_t *doc = NULL;
    int rc = read_record(o->broker, topic, part, off, &doc);
    if (rc) {
        fprintf(stderr, "verity share reveal: cannot read %s: %s\n", pos, verity_strerror(rc));
        return CMD_EXIT_FAIL;
    }
    const json_t *v = jp_get(doc, path);
    json_t *r = v ? export_reveal(&k, pos, path, v) : NULL;
    if (!r) {
        fprintf(stderr, "verity share reveal: record %s has no field %s\n", pos, path);
        json_decref(doc);
        return CMD_EXIT_FAIL;
    }
    char *s = json_dumps(r, JSON_COMPACT | JSON_SORT_KEYS);
    printf("%s\n", s);
    free(s);
    json_decref(r);
    json_decref(doc);
    return CMD_EXIT_OK;
}

static int share_detokenize(struct opts *o, const char *id, const char *token)
{
    uint8_t secret[32];
    struct xf_keys k;
    json_t *v = NULL;
    if (!id || !token) {
        fprintf(stderr, "verity share detokenize: --share ID TOKEN\n");
        return CMD_EXIT_USAGE;
    }
    if (load_secret(o->keys, secret) || xf_keys_derive(secret, id, &k)) {
        fprintf(stderr, "verity share detokenize: cannot load %s/gateway.secret\n", o->keys);
        return CMD_EXIT_FAIL;
    }
    if (xf_detokenize(&k, NULL, token, &v)) {
        fprintf(stderr, "verity share detokenize: not a token of share %s\n", id);
        return CMD_EXIT_FAIL;
    }
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    printf("%s\n", s);
    free(s);
    json_decref(v);
    return CMD_EXIT_OK;
}

/* ---- dispatch ---------------------------------------------------------------------------- */

int cmd_share_recipient(const char *sub, int argc, char **argv); /* cmd_share_fetch.c */

int cmd_share(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CMD_EXIT_USAGE : CMD_EXIT_OK;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "fetch") == 0 || strcmp(sub, "verify") == 0 || strcmp(sub, "decrypt") == 0 ||
        strcmp(sub, "check-reveal") == 0)
        return cmd_share_recipient(sub, argc - 1, argv + 1);
    struct opts o = {NULL, DEFAULT_KEYS, false};
    const char *pos_args[4] = {0};
    int npos = 0;
    const char *share = NULL, *event = NULL, *outcome = NULL, *reason = NULL, *pos = NULL,
               *path = NULL;
    /* create parses its own repeated options */
    char *rest[256];
    int nrest = 0;
    rest[nrest++] = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return CMD_EXIT_OK;
        }
        if (strcmp(a, "--json") == 0) {
            o.json = true;
            continue;
        }
        const char **dst = strcmp(a, "--broker") == 0    ? &o.broker
                           : strcmp(a, "--keys") == 0    ? &o.keys
                           : strcmp(a, "--share") == 0   ? &share
                           : strcmp(a, "--event") == 0   ? &event
                           : strcmp(a, "--outcome") == 0 ? &outcome
                           : strcmp(a, "--reason") == 0  ? &reason
                           : strcmp(a, "--pos") == 0     ? &pos
                           : strcmp(a, "--path") == 0    ? &path
                                                         : NULL;
        if (dst) {
            if (!v) {
                fprintf(stderr, "verity share %s: %s needs a value\n", sub, a);
                return CMD_EXIT_USAGE;
            }
            *dst = v;
            i++;
        } else if (strcmp(sub, "create") == 0) {
            if (nrest == 255)
                return CMD_EXIT_USAGE;
            rest[nrest++] = argv[i];
        } else if (a[0] != '-' && npos < 4) {
            pos_args[npos++] = a;
        } else {
            fprintf(stderr, "verity share %s: unexpected argument '%s'\n", sub, a);
            return CMD_EXIT_USAGE;
        }
    }
    rest[nrest] = NULL;
    if (strcmp(sub, "init") == 0)
        return share_init(&o);
    if (strcmp(sub, "create") == 0)
        return share_create(&o, nrest, rest);
    if (strcmp(sub, "list") == 0)
        return share_list(&o, NULL);
    if (strcmp(sub, "show") == 0 && npos == 1)
        return share_list(&o, pos_args[0]);
    if (strcmp(sub, "revoke") == 0 && npos == 1)
        return share_revoke(&o, pos_args[0], reason);
    if (strcmp(sub, "audit") == 0)
        return share_audit(&o, share, event, outcome);
    if (strcmp(sub, "reveal") == 0)
        return share_reveal(&o, share, pos, path);
    if (strcmp(sub, "detokenize") == 0 && npos == 1)
        return share_detokenize(&o, share, pos_args[0]);
    fprintf(stderr, "verity share: unknown command or arguments for '%s'\n", sub);
    usage(stderr);
    return CMD_EXIT_USAGE;
}
