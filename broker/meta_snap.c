/*
 * meta_snap: encode and decode the metadata state (meta_snap.h). Pure: no
 * broker state, no I/O; tests/unit/test_meta_snap.c and
 * tests/fuzz/fuzz_meta_snap.c drive it directly.
 */
#include "broker/meta_snap.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/auth_store.h"
#include "broker/config.h"
#include "proto/codec.h"
#include "storage/batch.h"
#include "verity/errors.h"

int meta_json_int(json_t *o, const char *k, int64_t lo, int64_t hi, int64_t *out)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v))
        return VERITY_EINVAL;
    int64_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return VERITY_EINVAL;
    *out = x;
    return 0;
}

int meta_topic_rec_parse(json_t *rec, struct meta_topic_rec *out, char *why, size_t cap)
{
    const char *name = json_string_value(json_object_get(rec, "name"));
    const char *dur = json_string_value(json_object_get(rec, "durability"));
    int64_t x;
    memset(out, 0, sizeof *out);
    if (!name || !codec_topic_name_ok(name, true) || strlen(name) >= sizeof out->name || !dur ||
        bcfg_durability_parse(dur) < 0) {
        snprintf(why, cap, "bad create_topic");
        return VERITY_EINVAL;
    }
    snprintf(out->name, sizeof out->name, "%s", name);
    struct topic_cfg *tc = &out->cfg;
    tc->durability = (enum topic_durability)bcfg_durability_parse(dur);
    if (meta_json_int(rec, "partitions", 1, VERITY_PARTITIONS_MAX, &x))
        goto bad;
    tc->partitions = (uint32_t)x;
    if (meta_json_int(rec, "retention_ms", -1, INT64_MAX, &tc->retention_ms) ||
        meta_json_int(rec, "retention_bytes", -1, INT64_MAX, &tc->retention_bytes))
        goto bad;
    if (meta_json_int(rec, "segment_bytes", 4096, 1ll << 31, &x))
        goto bad;
    tc->segment_bytes = (uint64_t)x;
    if (meta_json_int(rec, "max_message_bytes", BATCH_HDR_SIZE + 8, VERITY_BATCH_BYTES_MAX, &x))
        goto bad;
    tc->max_message_bytes = (uint32_t)x;
    tc->replicas = 1;
    if (json_object_get(rec, "replicas")) {
        if (meta_json_int(rec, "replicas", 1, 5, &x) || (x != 1 && x != 3 && x != 5))
            goto bad;
        tc->replicas = (uint32_t)x;
    }
    out->created_ms = 0;
    (void)meta_json_int(rec, "time_ms", INT64_MIN, INT64_MAX, &out->created_ms);
    return 0;
bad:
    snprintf(why, cap, "bad create_topic fields");
    return VERITY_EINVAL;
}

void meta_image_free(struct meta_image *im)
{
    free(im->topics);
    free(im->epochs);
    auth_store_free(im->auth);
    memset(im, 0, sizeof *im);
}

static json_t *topic_json(const struct meta_topic_rec *t)
{
    const struct topic_cfg *tc = &t->cfg;
    return json_pack("{s:s, s:s, s:I, s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "type", "create_topic",
                     "name", t->name, "partitions", (json_int_t)tc->partitions, "durability",
                     bcfg_durability_name(tc->durability), "retention_ms",
                     (json_int_t)tc->retention_ms, "retention_bytes",
                     (json_int_t)tc->retention_bytes, "segment_bytes",
                     (json_int_t)tc->segment_bytes, "max_message_bytes",
                     (json_int_t)tc->max_message_bytes, "time_ms", (json_int_t)t->created_ms,
                     "replicas", (json_int_t)(tc->replicas ? tc->replicas : 1));
}

int meta_image_encode(const struct meta_image *im, uint8_t **out, size_t *len)
{
    if (im->n_producers > META_PRODUCER_ID_MAX)
        return VERITY_EINVAL;
    json_t *arr = json_array();
    if (!arr)
        return -ENOMEM;
    for (size_t i = 0; i < im->n_topics; i++) {
        json_t *rec = topic_json(&im->topics[i]);
        if (!rec || json_array_append_new(arr, rec)) {
            json_decref(arr);
            return -ENOMEM;
        }
    }
    char *text = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    if (!text)
        return -ENOMEM;
    size_t jlen = strlen(text), np = (size_t)im->n_producers;
    char *atext = NULL;
    const struct auth_store *as = im->auth;
    if (as && (as->n_keys || as->n_certs || as->n_acls || as->n_quotas || as->n_roles) &&
        !(atext = auth_store_dump(as))) {
        free(text);
        return -ENOMEM;
    }
    size_t alen = atext ? strlen(atext) : 0;
    size_t n = 4 + jlen + 8 + 2 * np + (atext ? 4 + alen : 0);
    uint8_t *buf = malloc(n);
    if (!buf) {
        free(text);
        free(atext);
        return -ENOMEM;
    }
    put_le32(buf, (uint32_t)jlen);
    memcpy(buf + 4, text, jlen);
    free(text);
    put_le64(buf + 4 + jlen, np);
    for (size_t i = 0; i < np; i++)
        put_le16(buf + 12 + jlen + 2 * i, (uint16_t)im->epochs[i]);
    if (atext) {
        put_le32(buf + 12 + jlen + 2 * np, (uint32_t)alen);
        memcpy(buf + 16 + jlen + 2 * np, atext, alen);
        free(atext);
    }
    *out = buf;
    *len = n;
    return 0;
}

static int decode_topics(const uint8_t *p, size_t n, struct meta_image *im)
{
    json_error_t jerr;
    json_t *arr = json_loadb((const char *)p, n, 0, &jerr);
    if (!arr || !json_is_array(arr)) {
        json_decref(arr);
        return VERITY_ECORRUPT;
    }
    size_t cnt = json_array_size(arr);
    int rc = 0;
    if (cnt && !(im->topics = calloc(cnt, sizeof *im->topics))) {
        json_decref(arr);
        return -ENOMEM;
    }
    for (size_t i = 0; i < cnt && rc == 0; i++) {
        json_t *rec = json_array_get(arr, i);
        const char *type = json_string_value(json_object_get(rec, "type"));
        char why[80];
        if (!json_is_object(rec) || !type || strcmp(type, "create_topic") != 0 ||
            meta_topic_rec_parse(rec, &im->topics[i], why, sizeof why)) {
            rc = VERITY_ECORRUPT;
            break;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(im->topics[k].name, im->topics[i].name) == 0)
                rc = VERITY_ECORRUPT; /* one topic per name */
        im->n_topics = i + 1;
    }
    json_decref(arr);
    return rc;
}

int meta_image_decode(const uint8_t *buf, size_t len, struct meta_image *im)
{
    memset(im, 0, sizeof *im);
    if (len < 12)
        return VERITY_ECORRUPT;
    uint32_t jlen = get_le32(buf);
    if ((uint64_t)jlen + 12 > len)
        return VERITY_ECORRUPT;
    uint64_t np = get_le64(buf + 4 + jlen);
    if (np > META_PRODUCER_ID_MAX || 2 * np > len - 12 - jlen)
        return VERITY_ECORRUPT;
    const uint8_t *ep = buf + 12 + jlen;
    size_t rest = len - 12 - jlen - 2 * np; /* the auth section, or nothing */
    int rc = 0;
    if (rest) {
        const uint8_t *p = ep + 2 * np;
        char why[200];
        if (rest < 4 || get_le32(p) != rest - 4 ||
            auth_store_parse((const char *)p + 4, rest - 4, &im->auth, why, sizeof why) != 0) {
            im->auth = NULL;
            return VERITY_ECORRUPT;
        }
    }
    if ((rc = decode_topics(buf + 4, jlen, im)))
        goto fail;
    if (np && !(im->epochs = malloc((size_t)np * sizeof *im->epochs))) {
        rc = -ENOMEM;
        goto fail;
    }
    im->n_producers = np;
    for (uint64_t i = 0; i < np; i++) {
        int16_t e = (int16_t)get_le16(ep + 2 * i);
        if (e < -1) {
            rc = VERITY_ECORRUPT;
            goto fail;
        }
        im->epochs[i] = e;
    }
    return 0;
fail:
    meta_image_free(im);
    return rc;
}
