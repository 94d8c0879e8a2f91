/*
 * verity keygen [--out PREFIX]: writes an Ed25519 key pair for signing
 * checkpoints: PREFIX.key (private, mode 0600) and PREFIX.pub (public).
 * Existing files are never overwritten: a lost signing key would orphan
 * every checkpoint it signed.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "storage/checkpoint.h"
#include "tools/cmds.h"
#include "verity/errors.h"

#define KEYGEN_PREFIX_DEFAULT "./verity"
#define KEYGEN_PATH_MAX 4096

static void keygen_usage(FILE *f)
{
    fprintf(f, "usage: verity keygen [--out PREFIX]\n"
               "  Writes PREFIX.key (Ed25519 private key, mode 0600) and PREFIX.pub\n"
               "  (public key, give it to auditors). PREFIX defaults to %s.\n"
               "  Creates PREFIX's directory if missing. Refuses to overwrite existing files.\n",
            KEYGEN_PREFIX_DEFAULT);
}

int cmd_keygen(int argc, char **argv)
{
    const char *prefix = KEYGEN_PREFIX_DEFAULT;
    char key_path[KEYGEN_PATH_MAX], pub_path[KEYGEN_PATH_MAX];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            keygen_usage(stdout);
            return CMD_EXIT_OK;
        } else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc && argv[i + 1][0] != '\0') {
            prefix = argv[++i];
        } else {
            fprintf(stderr, "verity keygen: unexpected argument '%s'\n", argv[i]);
            keygen_usage(stderr);
            return CMD_EXIT_USAGE;
        }
    }
    int n1 = snprintf(key_path, sizeof key_path, "%s.key", prefix);
    int n2 = snprintf(pub_path, sizeof pub_path, "%s.pub", prefix);
    if (n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof key_path || (size_t)n2 >= sizeof pub_path) {
        fprintf(stderr, "verity keygen: prefix too long\n");
        return CMD_EXIT_USAGE;
    }
    /* The key's directory is made if missing (private: 0700), so
     * `verity keygen --out /etc/verity/keys/verity` works on a clean machine. */
    char dir[KEYGEN_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", key_path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        for (char *p = dir + 1; *p; p++) {
            if (*p != '/')
                continue;
            *p = '\0';
            if (mkdir(dir, 0755) && errno != EEXIST) {
                fprintf(stderr, "verity keygen: cannot create %s: %s\n", dir, strerror(errno));
                return CMD_EXIT_FAIL;
            }
            *p = '/';
        }
        if (mkdir(dir, 0700) && errno != EEXIST) {
            fprintf(stderr, "verity keygen: cannot create %s: %s\n", dir, strerror(errno));
            return CMD_EXIT_FAIL;
        }
    }
    int rc = ckpt_keygen(key_path, pub_path);
    if (rc) {
        fprintf(stderr, "verity keygen: cannot write %s / %s: %s\n", key_path, pub_path,
                verity_strerror(rc));
        return CMD_EXIT_FAIL;
    }
    printf("wrote %s (private, keep it secret) and %s (public)\n", key_path, pub_path);
    return CMD_EXIT_OK;
}
