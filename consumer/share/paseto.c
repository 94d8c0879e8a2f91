/*
 * PASETO v4.public (https://github.com/paseto-standard/paseto-spec,
 * docs/01-Protocol-Versions/Version4.md): Ed25519 signatures over the
 * pre-authentication encoding of header, message, footer and implicit
 * assertion. OpenSSL 3 computes the signatures; this file only frames.
 *
 *   token  = "v4.public." b64url(m || sig) [ "." b64url(footer) ]
 *   sig    = Ed25519(sk, PAE("v4.public.", m, footer, implicit))
 *   PAE(p) = LE64(count) || for each p_i: LE64(len(p_i)) || p_i
 *            (LE64 clears the top bit)
 *
 * Tokens are at most SHARE_TOKEN_MAX bytes; anything else about the input
 * (other versions or purposes, padding, bad base64, short bodies) is
 * VERITY_EINVAL before any signature check.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/share/share.h"

#define V4_HDR "v4.public."
#define SIG_LEN 64

static void le64(uint8_t *p, uint64_t v)
{
    v &= 0x7fffffffffffffffull;
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

int paseto_pae(const uint8_t *const *pieces, const size_t *lens, size_t n, uint8_t **out,
               size_t *out_len)
{
    size_t total = 8;
    for (size_t i = 0; i < n; i++)
        total += 8 + lens[i];
    uint8_t *b = malloc(total), *p = b;
    if (!b)
        return -ENOMEM;
    le64(p, n);
    p += 8;
    for (size_t i = 0; i < n; i++) {
        le64(p, lens[i]);
        p += 8;
        if (lens[i])
            memcpy(p, pieces[i], lens[i]);
        p += lens[i];
    }
    *out = b;
    *out_len = total;
    return 0;
}

static int pae4(const uint8_t *m, size_t m_len, const char *footer, const char *implicit,
                uint8_t **out, size_t *out_len)
{
    const uint8_t *pieces[4] = {(const uint8_t *)V4_HDR, m, (const uint8_t *)(footer ? footer : ""),
                                (const uint8_t *)(implicit ? implicit : "")};
    size_t lens[4] = {strlen(V4_HDR), m_len, footer ? strlen(footer) : 0,
                      implicit ? strlen(implicit) : 0};
    return paseto_pae(pieces, lens, 4, out, out_len);
}

int paseto_v4_sign(EVP_PKEY *sk, const uint8_t *m, size_t m_len, const char *footer,
                   const char *implicit, char **token_out)
{
    int rc = VERITY_EINVAL;
    uint8_t *pae = NULL, *body = NULL;
    size_t pae_len, sig_len = SIG_LEN;
    char *tok = NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_PKEY_get_base_id(sk) != EVP_PKEY_ED25519)
        goto out;
    if ((rc = pae4(m, m_len, footer, implicit, &pae, &pae_len)))
        goto out;
    rc = -ENOMEM;
    body = malloc(m_len + SIG_LEN);
    size_t flen = footer ? strlen(footer) : 0;
    tok = malloc(strlen(V4_HDR) + 4 * ((m_len + SIG_LEN + 2) / 3) + 2 + 4 * ((flen + 2) / 3) + 1);
    if (!body || !tok)
        goto out;
    memcpy(body, m, m_len);
    rc = VERITY_EINVAL;
    if (EVP_DigestSignInit(md, NULL, NULL, NULL, sk) != 1 ||
        EVP_DigestSign(md, body + m_len, &sig_len, pae, pae_len) != 1 || sig_len != SIG_LEN)
        goto out;
    size_t o = strlen(V4_HDR);
    memcpy(tok, V4_HDR, o);
    o += sh_b64url_enc(body, m_len + SIG_LEN, tok + o);
    if (flen) {
        tok[o++] = '.';
        sh_b64url_enc((const uint8_t *)footer, flen, tok + o);
    }
    *token_out = tok;
    tok = NULL;
    rc = 0;
out:
    EVP_MD_CTX_free(md);
    free(pae);
    free(body);
    free(tok);
    return rc;
}

/* Splits and decodes a token into body (m || sig) and footer. */
static int split(const char *token, uint8_t **body, size_t *body_len, char **footer)
{
    size_t n = strnlen(token, SHARE_TOKEN_MAX + 1);
    if (n > SHARE_TOKEN_MAX || strncmp(token, V4_HDR, strlen(V4_HDR)) != 0)
        return VERITY_EINVAL;
    const char *b = token + strlen(V4_HDR);
    const char *dot = memchr(b, '.', n - strlen(V4_HDR));
    size_t blen = dot ? (size_t)(dot - b) : strlen(b);
    const char *f = dot ? dot + 1 : "";
    size_t flen = strlen(f);
    if (dot && (flen == 0 || memchr(f, '.', flen)))
        return VERITY_EINVAL;
    uint8_t *bb = malloc(blen + 1), *fb = malloc(flen + 1);
    size_t got_b, got_f;
    if (!bb || !fb || sh_b64url_dec(b, blen, bb, blen, &got_b) || got_b < SIG_LEN ||
        sh_b64url_dec(f, flen, fb, flen, &got_f) || memchr(fb, '\0', got_f)) {
        free(bb);
        free(fb);
        return VERITY_EINVAL;
    }
    fb[got_f] = '\0';
    *body = bb;
    *body_len = got_b;
    *footer = (char *)fb;
    return 0;
}

int paseto_v4_verify(EVP_PKEY *pk, const char *token, const char *implicit, uint8_t **m_out,
                     size_t *m_len_out, char **footer_out)
{
    uint8_t *body = NULL, *pae = NULL, *m = NULL;
    char *footer = NULL;
    size_t body_len, pae_len;
    EVP_MD_CTX *md = NULL;
    int rc = split(token, &body, &body_len, &footer);
    if (rc)
        return rc;
    size_t m_len = body_len - SIG_LEN;
    rc = -ENOMEM;
    m = malloc(m_len + 1);
    md = EVP_MD_CTX_new();
    if (!m || !md)
        goto out;
    memcpy(m, body, m_len);
    m[m_len] = '\0';
    if ((rc = pae4(m, m_len, footer, implicit, &pae, &pae_len)))
        goto out;
    rc = VERITY_ESIGNATURE;
    if (!pk || EVP_PKEY_get_base_id(pk) != EVP_PKEY_ED25519 ||
        EVP_DigestVerifyInit(md, NULL, NULL, NULL, pk) != 1 ||
        EVP_DigestVerify(md, body + m_len, SIG_LEN, pae, pae_len) != 1)
        goto out;
    *m_out = m;
    *m_len_out = m_len;
    m = NULL;
    if (footer_out) {
        *footer_out = footer;
        footer = NULL;
    }
    rc = 0;
out:
    EVP_MD_CTX_free(md);
    free(body);
    free(pae);
    free(m);
    free(footer);
    return rc;
}

int paseto_v4_peek(const char *token, char **m_out)
{
    uint8_t *body;
    size_t body_len;
    char *footer;
    int rc = split(token, &body, &body_len, &footer);
    if (rc)
        return rc;
    free(footer);
    size_t m_len = body_len - SIG_LEN;
    body[m_len] = '\0';
    if (memchr(body, '\0', m_len)) {
        free(body);
        return VERITY_EINVAL;
    }
    *m_out = (char *)body;
    return 0;
}
