/*
 * verity_strerror / verity_errname: names for every code in
 * include/verity/errors.h, and for -errno values through strerror.
 */
#include <errno.h>
#include <string.h>

#include "verity/errors.h"

struct err_name {
    int code;
    const char *name;
    const char *text;
};

static const struct err_name err_names[] = {
    {VERITY_OK, "OK", "success"},
    {VERITY_ECORRUPT, "ECORRUPT", "data is corrupt (CRC or structure check failed)"},
    {VERITY_ECHAIN, "ECHAIN", "hash chain does not link"},
    {VERITY_ELIMIT, "ELIMIT", "limit exceeded"},
    {VERITY_EREADONLY, "EREADONLY", "log is read-only after a failed sync"},
    {VERITY_EBADBATCH, "EBADBATCH", "invalid record batch"},
    {VERITY_ESIGNATURE, "ESIGNATURE", "signature does not verify"},
    {VERITY_ENOTFOUND, "ENOTFOUND", "not found"},
    {VERITY_EOFFSET, "EOFFSET", "offset out of range"},
    {VERITY_EEXIST, "EEXIST", "already exists"},
    {VERITY_EINVAL, "EINVAL", "invalid argument"},
    {VERITY_EOUTOFORDER, "EOUTOFORDER", "out of order sequence"},
    {VERITY_EFENCED, "EFENCED", "producer fenced by a newer epoch"},
    {VERITY_EDUPLICATE, "EDUPLICATE", "duplicate batch"},
    {VERITY_EPROTO, "EPROTO", "protocol error"},
    {VERITY_EVERSION, "EVERSION", "unsupported version"},
    {VERITY_ETIMEOUT, "ETIMEOUT", "timed out"},
    {VERITY_ECLOSED, "ECLOSED", "closed"},
    {VERITY_EUNSUPPORTED, "EUNSUPPORTED", "not supported"},
    {VERITY_ENOTLEADER, "ENOTLEADER", "not the leader for this partition"},
    {VERITY_ELEASE, "ELEASE", "lease not held"},
    {VERITY_EMEMBER, "EMEMBER", "unknown group member"},
    {VERITY_EALREADY, "EALREADY", "already acknowledged; this ack did not count"},
    {VERITY_ETLS, "ETLS", "TLS handshake failed (untrusted or expired certificate, wrong host name, "
                          "protocol version, or a client certificate the broker requires)"},
    {VERITY_EAUTH, "EAUTH", "authentication required or failed (unknown, wrong or revoked key)"},
    {VERITY_EDENIED, "EDENIED", "denied by the principal's ACLs"},
    {VERITY_EQUOTA, "EQUOTA", "quota exceeded"},
};

static const struct err_name *find(int err)
{
    for (size_t i = 0; i < sizeof(err_names) / sizeof(err_names[0]); i++)
        if (err_names[i].code == err)
            return &err_names[i];
    return NULL;
}

const char *verity_strerror(int err)
{
    const struct err_name *e = find(err);
    if (e)
        return e->text;
    if (err < 0 && err > VERITY_EBASE)
        return strerror(-err);
    return "unknown error";
}

const char *verity_errname(int err)
{
    const struct err_name *e = find(err);
    if (e)
        return e->name;
    if (err < 0 && err > VERITY_EBASE) {
        const char *n = strerrorname_np(-err);
        return n ? n : "ESYSTEM";
    }
    return "EUNKNOWN";
}
