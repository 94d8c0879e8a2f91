/*
 * Verity error codes.
 *
 * A function that can fail returns int: 0 on success, a negative code on
 * failure. System errors are -errno (always > -4096); domain errors are the
 * VERITY_E* codes below, all <= -4096 so the two ranges never overlap.
 * verity_strerror() names either kind. The wire protocol (proto/verity.proto)
 * carries the same domain codes, so a client sees exactly what the storage or
 * broker layer returned.
 */
#ifndef VERITY_ERRORS_H
#define VERITY_ERRORS_H

enum verity_err {
    VERITY_OK = 0,
    VERITY_EBASE = -4096,
    VERITY_ECORRUPT = -4097,      /* bytes fail their CRC or structure check */
    VERITY_ECHAIN = -4098,        /* SHA-256 chain does not link */
    VERITY_ELIMIT = -4099,        /* a configured limit was exceeded */
    VERITY_EREADONLY = -4100,     /* log turned read-only after a failed fsync */
    VERITY_EBADBATCH = -4101,     /* batch rejected at the boundary */
    VERITY_ESIGNATURE = -4102,    /* checkpoint signature does not verify */
    VERITY_ENOTFOUND = -4103,     /* no such topic, group, key, ... */
    VERITY_EOFFSET = -4104,       /* offset out of range */
    VERITY_EEXIST = -4105,        /* already exists */
    VERITY_EINVAL = -4106,        /* invalid argument or request */
    VERITY_EOUTOFORDER = -4107,   /* producer sequence gap */
    VERITY_EFENCED = -4108,       /* producer epoch is older than the current one */
    VERITY_EDUPLICATE = -4109,    /* batch already appended (not an error to users) */
    VERITY_EPROTO = -4110,        /* malformed frame or message */
    VERITY_EVERSION = -4111,      /* unsupported protocol or format version */
    VERITY_ETIMEOUT = -4112,      /* deadline passed */
    VERITY_ECLOSED = -4113,       /* connection or object closed */
    VERITY_EUNSUPPORTED = -4114,  /* feature not available */
    VERITY_ENOTLEADER = -4115,    /* partition is led by another broker */
    VERITY_ELEASE = -4116,        /* delivery lease not held by this member */
    VERITY_EMEMBER = -4117,       /* unknown or removed group member */
    VERITY_EALREADY = -4118,      /* acknowledged before: this ack did not count */
    VERITY_ETLS = -4119,          /* TLS handshake failed (CA, certificate, version, name) */
    VERITY_EAUTH = -4120,         /* not authenticated, or the key/certificate is unknown or revoked */
    VERITY_EDENIED = -4121,       /* the principal's ACLs do not allow this operation */
    VERITY_EQUOTA = -4122,        /* a quota was exceeded (the message names it) */
    VERITY_ELAST = -4123,
};

/* Returns a static string that names the code; never NULL. Thread-safe. */
const char *verity_strerror(int err);

/* Returns the symbolic name ("ECORRUPT", "ENOENT", ...) of a code; never NULL. */
const char *verity_errname(int err);

#endif
