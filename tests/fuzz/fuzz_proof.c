/*
 * libFuzzer target for the proof decoders: C2SP signed notes (note_open),
 * verifier keys, checkpoint texts, tlog-proof texts (parse and full offline
 * check), tlog-witness request bodies, JSON proofs (proof_verify_text), and
 * witnesses' answers (tproof_cosig_check, tproof_size_parse).
 * The first byte picks the decoder; the rest is its input. Every decoder
 * must return a code, never crash, leak or read out of bounds. A fixed key
 * is trusted so that inputs reaching signature checks are exercised too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "storage/note.h"
#include "storage/proof.h"
#include "storage/tproof.h"

static const char vkey[] =
    "verity.example/local+52bdfc7c+AdW3CUCpB1B2uU+5FV9hTOoR0iASqNgL9iij3puV6AOV";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct note_vkey k;
    static int init;
    if (!init) {
        if (note_vkey_parse(vkey, &k))
            abort();
        init = 1;
    }
    if (size < 1)
        return 0;
    uint8_t sel = data[0] % 8;
    char *s = malloc(size);
    if (!s)
        return 0;
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    size_t n = size - 1, tlen = 0;
    switch (sel) {
    case 0: {
        uint32_t mask = 0;
        (void)note_open(s, n, &k, 1, &tlen, &mask);
        break;
    }
    case 1: {
        struct note_vkey v;
        (void)note_vkey_parse(s, &v);
        break;
    }
    case 2: {
        char origin[NOTE_ORIGIN_MAX + 1];
        uint64_t sz;
        uint8_t root[32];
        (void)note_checkpoint_parse(s, n, origin, sizeof origin, &sz, root);
        break;
    }
    case 3: {
        struct tproof p;
        struct tproof_result r;
        if (tproof_parse(s, n, &p) == 0) {
            (void)tproof_verify(&p, &k, 1, &r);
            tproof_deinit(&p);
        }
        break;
    }
    case 4: {
        struct tproof_witness_req w;
        (void)tproof_witness_parse(s, n, &w);
        break;
    }
    case 5: {
        json_t *sum = NULL;
        (void)proof_verify_text(s, n, &k, 1, &sum);
        json_decref(sum);
        break;
    }
    case 6: { /* a witness's 200 answer (the broker's witness push) */
        static const char note[] = "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n";
        (void)tproof_cosig_check(note, sizeof note - 1, s, n, &k);
        break;
    }
    case 7: { /* a witness's 409 answer */
        uint64_t v;
        (void)tproof_size_parse(s, n, &v);
        break;
    }
    }
    free(s);
    return 0;
}
