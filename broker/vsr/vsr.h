/*
 * vsr: the replication core of one replica group, Viewstamped Replication
 * Revisited (Liskov and Cowling 2012) with protocol-aware recovery
 * (Alagappan et al., FAST 2018), as a pure step function:
 *
 *     (replica state, message | tick | write completion) -> outbox
 *
 * The core does no I/O, reads no clock, draws no random numbers and does not
 * allocate after vsr_init. Hashing comes in through cfg.hash; reads of the
 * replica's own journal through cfg.read_prepare / cfg.read_header (they
 * return whatever the disk holds: the core verifies every byte it reads).
 * Everything else leaves through the outbox, which the caller drains after
 * every call: messages to send, writes to perform (acknowledge each with
 * vsr_on_write_done once it is durable), commits to apply, and a state to
 * install after a state transfer.
 *
 * Words (DESIGN.md): replica, primary (replica view % replica_count), backup,
 * view, op (position in the replicated log, 1-based; op 0 is the root),
 * commit number (commit_max: highest op known committed; commit_min: highest
 * op applied here), superblock (durable view, log view, commit number,
 * membership; broker/vsr/superblock.h).
 *
 * Replica states (status), with the function that performs each transition:
 *
 *            vsr_init (restart, backup of its durable view)
 *                 |
 *                 v              start_view (SV installed, superblock durable)
 *   +------> RECOVERING --------------------------------------+
 *   |             | f + 1 pre-votes / SVC or DVC newer view    |
 *   |             v   (start_view_change)                      v
 *   |        VIEW_CHANGE <------------------------------- NORMAL
 *   |             |  f + 1 pre-votes (backup timed out), SVC/   ^
 *   |             |  DVC newer view                             |
 *   |             | new primary: DVC quorum, log repaired,     |
 *   |             | superblock durable (become_primary)        |
 *   |             +--------------------------------------------+
 *   |  message of a newer view while NORMAL (backup lags behind)
 *   +------------ (enter_recovering)
 *
 * Journal: a ring of cfg.slots slots; op k lives in slot k % slots, as a
 * prepare (header + body) and, written only after the prepare is durable, a
 * redundant copy of its header (the "prepared" mark). A backup sends
 * prepare-ok only when both are durable. On restart (vsr_init) the pair tells
 * a torn write from corruption: a torn prepare whose header slot still holds
 * an applied older op was never acknowledged and counts as absent; a bad
 * prepare under a valid header of an unapplied op is corruption of an entry
 * the replica may have acknowledged: it is faulty, it must be repaired, and
 * the replica never says it lacks that op (it sends no nack for it).
 */
#ifndef VERITY_VSR_H
#define VERITY_VSR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VSR_REPLICAS_MAX    5
#define VSR_CHECKSUM_SIZE   32
#define VSR_HEADER_SIZE     144 /* on-disk and on-wire header bytes */
#define VSR_PIPELINE_MAX    8   /* uncommitted ops a primary may have in flight */
#define VSR_WINDOW_MAX      (2 * VSR_PIPELINE_MAX + 1)
#define VSR_CLIENTS_MAX     64 /* client table entries (last reply per client) */
#define VSR_FAULTY_LIST_MAX 16 /* faulty slots a DVC can list (more: no nack past its window) */
#define VSR_HEADERS_MAX     256 /* headers one HEADERS message carries (also <= slots / 4) */

/* Planted bugs, for the simulator's self-test only (cfg.plant bits). Never
 * set outside tests/sim. */
enum vsr_plant {
    VSR_PLANT_COMMIT_MINORITY = 1u << 0, /* (a) primary commits with its own ok */
    VSR_PLANT_TRUNCATE_ONE = 1u << 1,    /* (b) new primary truncates on its own nack */
    VSR_PLANT_SKIP_CHAIN = 1u << 2,      /* (c) backup appends without the parent check */
    VSR_PLANT_FORGET_VIEW = 1u << 3,     /* (d) superblock keeps view and log view at 0 */
    VSR_PLANT_IGNORE_REJOIN = 1u << 4,   /* (e) a fresh replica ignores cfg.rejoin */
};

/*
 * Entry header (VSR_HEADER_SIZE bytes on disk and on the wire, little-endian):
 *
 *   off size field
 *     0   32 hcheck     H(bytes[32, 144)): integrity of the header alone
 *    32   32 checksum   H(bytes[64, 144) || body): the entry's identity; it
 *                       covers parent, so checksums chain like the log's
 *                       chain hash
 *    64   32 parent     checksum of the entry at op - 1
 *    96    8 op
 *   104    8 view       view in which the primary created the entry
 *   112    4 size       body bytes
 *   116    4 reserved   0
 *   120    8 client     client id (0 = none)
 *   128    8 request    client request number
 *   136    8 reserved   0
 *
 * A header is valid only if hcheck matches; an entry only if the header is
 * valid and checksum matches its body.
 */
struct vsr_header {
    uint8_t checksum[VSR_CHECKSUM_SIZE];
    uint8_t parent[VSR_CHECKSUM_SIZE];
    uint64_t op;
    uint64_t view;
    uint32_t size;
    uint64_t client;
    uint64_t request;
};

enum vsr_status { VSR_RECOVERING = 0, VSR_NORMAL = 1, VSR_VIEW_CHANGE = 2 };

enum vsr_msg_type {
    VSR_MSG_REQUEST = 1,        /* client -> primary: body */
    VSR_MSG_REPLY,              /* primary -> client: op, checksum */
    VSR_MSG_PREPARE,            /* primary -> backups: header, body, commit */
    VSR_MSG_PREPARE_OK,         /* backup -> primary: op, checksum */
    VSR_MSG_COMMIT,             /* primary -> backups: commit, checksum (heartbeat) */
    VSR_MSG_START_VIEW_CHANGE,  /* all -> all */
    VSR_MSG_DO_VIEW_CHANGE,     /* all -> new primary: log view, op, commit, window */
    VSR_MSG_START_VIEW,         /* new primary -> backups: op, commit, window */
    VSR_MSG_REQUEST_START_VIEW, /* recovering backup -> primary */
    VSR_MSG_REQUEST_PREPARE,    /* any -> any: op, checksum (repair) */
    VSR_MSG_REPAIR,             /* answer: header, body */
    VSR_MSG_REQUEST_STATE,      /* lagging replica -> any: its commit_min */
    VSR_MSG_STATE,              /* answer: op, checksum, digest of the applied prefix */
    VSR_MSG_REQUEST_VIEW,       /* rejoining replica -> all: op = its nonce */
    VSR_MSG_VIEW,               /* answer: the sender's view and commit, op = the nonce */
    VSR_MSG_REQUEST_HEADERS,    /* lagging -> any: headers of [op_min, op] chained down from
                                 * the entry (op, checksum) */
    VSR_MSG_HEADERS,            /* answer: op = highest; body = encoded headers (hcheck'd,
                                 * VSR_HEADER_SIZE each) of op, op - 1, ... each the parent
                                 * of the one before */
    VSR_MSG_PRE_VIEW_CHANGE,    /* all -> all: view = the view the sender would start; it
                                 * has timed out on its primary but changed nothing yet
                                 * (pre-vote; docs/REPLICATION.md, "Leader stickiness") */
    VSR_MSG_TYPE_COUNT
};

/* What a replica says about one op in a DO_VIEW_CHANGE / START_VIEW window. */
enum vsr_wstatus {
    VSR_W_NACK = 0,    /* never prepared anything at this op that it could
                        * have acknowledged: counts toward a nack quorum */
    VSR_W_HAVE = 1,    /* holds the entry intact; header is full */
    VSR_W_HEADER = 2,  /* knows the checksum (header.op, header.checksum),
                        * body missing or faulty: not a nack */
    VSR_W_UNKNOWN = 3, /* faulty slot or unverified: not a nack */
};

struct vsr_wentry {
    uint8_t status; /* enum vsr_wstatus */
    bool full;      /* header fully known (else op + checksum only) */
    struct vsr_header h;
};

/* A message. body points into the outbox arena (outgoing) or into the
 * caller's buffer (incoming); it is valid until the next call on the core. */
struct vsr_msg {
    uint8_t type; /* enum vsr_msg_type */
    uint8_t from; /* replica index, or 0xff from a client */
    uint8_t to;   /* replica index, or 0xff to a client */
    uint64_t cluster;
    uint64_t view;
    uint64_t log_view;                   /* DO_VIEW_CHANGE */
    uint64_t op;                         /* PREPARE_OK, DVC/SV head, REQUEST_PREPARE, STATE */
    uint64_t op_min;                     /* REQUEST_HEADERS: lowest op wanted (<= op) */
    uint64_t commit;                     /* commit number (commit_max) of the sender */
    uint8_t checksum[VSR_CHECKSUM_SIZE]; /* of op (PREPARE_OK, REQUEST_PREPARE, REPLY,
                                          * STATE) or of commit (COMMIT) */
    uint8_t digest[VSR_CHECKSUM_SIZE];   /* STATE: digest of the applied prefix */
    uint64_t client;                     /* REQUEST, REPLY */
    uint64_t request;                    /* REQUEST, REPLY */
    struct vsr_header header;            /* PREPARE, REPAIR */
    const uint8_t *body;                 /* PREPARE, REPAIR, REQUEST */
    uint32_t body_len;
    bool nack_above;   /* DVC: every op past the window is a nack,
                        * except in the faulty slots listed */
    uint32_t faulty_n; /* DVC: journal slots that are faulty */
    uint32_t faulty[VSR_FAULTY_LIST_MAX];
    uint64_t window_base; /* DVC, SV: op of window[0] */
    uint32_t window_len;
    struct vsr_wentry window[VSR_WINDOW_MAX];
};

enum vsr_write_kind { VSR_WRITE_PREPARE = 1, VSR_WRITE_HEADER, VSR_WRITE_SUPERBLOCK };

/* A write for the caller to perform. bytes point into the outbox arena. For
 * PREPARE: VSR_HEADER_SIZE header bytes then the body, into journal slot
 * `slot`; HEADER: the header bytes into the redundant header slot `slot`;
 * SUPERBLOCK: one superblock copy (`slot` = copy index). */
struct vsr_write {
    uint8_t kind;
    uint32_t slot;
    uint64_t op; /* PREPARE / HEADER: the entry's op */
    uint64_t id; /* echo it to vsr_on_write_done */
    const uint8_t *bytes;
    uint32_t len;
};

/* An op to apply, in op order. body is verified against checksum. */
struct vsr_commit {
    uint64_t op;
    struct vsr_header header;
    const uint8_t *body;
    uint8_t digest[VSR_CHECKSUM_SIZE]; /* H(digest(op - 1) || checksum) */
};

struct vsr_outbox {
    struct vsr_msg *msgs;
    size_t nmsgs, msgs_cap;
    struct vsr_write *writes;
    size_t nwrites, writes_cap;
    struct vsr_commit *commits;
    size_t ncommits, commits_cap;
    bool install; /* a state transfer to install (below) */
    uint64_t install_op;
    uint8_t install_checksum[VSR_CHECKSUM_SIZE];
    uint8_t install_digest[VSR_CHECKSUM_SIZE];
    uint8_t *arena;
    size_t arena_used, arena_cap;
};

/* What a journal read returns: 0 with the bytes, or a negative value when
 * the slot cannot be read at all. The core verifies the bytes. */
typedef int (*vsr_read_fn)(void *ctx, uint32_t slot, uint8_t *buf, uint32_t cap, uint32_t *len);

struct vsr_config {
    uint64_t cluster;         /* cluster id, in every message */
    uint8_t replica;          /* this replica's index */
    uint8_t replica_count;    /* 1, 3 or 5 */
    uint32_t slots;           /* journal slots; > 2 * pipeline */
    uint32_t pipeline;        /* 1 .. VSR_PIPELINE_MAX */
    uint32_t body_max;        /* largest body */
    uint32_t heartbeat_ticks; /* primary: commit heartbeat period */
    uint32_t retry_ticks;     /* resend period (prepares, DVC, repair) */
    uint32_t timeout_ticks;   /* backup: primary silent this long -> view change */
    void (*hash)(void *ctx, const void *a, size_t alen, const void *b, size_t blen,
                 uint8_t out[VSR_CHECKSUM_SIZE]); /* H(a || b), e.g. SHA-256 */
    vsr_read_fn read_prepare;                     /* journal prepare slot */
    vsr_read_fn read_header;                      /* redundant header slot */
    vsr_read_fn read_superblock;                  /* superblock copy (slot = copy index) */
    void *ctx;                                    /* passed to the functions above */
    uint32_t plant;                               /* enum vsr_plant bits; 0 outside tests/sim */
    /* Rejoin (a replica whose disk was wiped, restarted empty): read only
     * when the replica starts fresh (no valid superblock copy). It then
     * votes in no view change (no START_VIEW_CHANGE, no DO_VIEW_CHANGE, so
     * no nack) and never times out into one until it has caught up: it
     * asks every peer for its view (REQUEST_VIEW with rejoin_nonce, which
     * must differ on every start, e.g. random), waits for answers from f + 1
     * of them, takes a START_VIEW of a view at least the highest answered
     * and catches up (journal, repairs, state transfer) until it has
     * applied that START_VIEW's head op. The superblock records the mode
     * (VSR_SB_REJOINING), so a restart in the middle resumes it. */
    bool rejoin;
    uint64_t rejoin_nonce;
};

/* The applied prefix the caller recovered from its state (the data log). */
struct vsr_state {
    uint64_t op; /* commit_min: last op applied */
    uint8_t checksum[VSR_CHECKSUM_SIZE];
    uint8_t digest[VSR_CHECKSUM_SIZE];
};

/* Counters, for the simulator and /metrics. */
struct vsr_counters {
    uint64_t view_changes;     /* views this replica completed as primary */
    uint64_t repairs;          /* entries repaired from a peer */
    uint64_t state_transfers;  /* states installed */
    uint64_t nack_truncations; /* ops truncated by a nack quorum */
    uint64_t faulty_found;     /* faulty entries found (restart or read) */
    uint64_t torn_found;       /* torn writes told apart from corruption */
    uint64_t stale_dropped;    /* entries dropped by a view change or restart */
    uint64_t rejoins;          /* rejoins completed (caught up after a wiped disk) */
    uint64_t headers_learned;  /* canonical checksums learned from HEADERS (catch-up) */
    uint64_t msgs_in[VSR_MSG_TYPE_COUNT];
    uint64_t msgs_out[VSR_MSG_TYPE_COUNT];
};

struct vsr_slot;
struct vsr;

/* Sizes of what vsr_init needs: the caller allocates both blocks once (the
 * outbox arena also serves vsr_init as scratch for the journal scan). */
size_t vsr_size(const struct vsr_config *cfg);
size_t vsr_outbox_arena_size(const struct vsr_config *cfg);

/*
 * Initialises the replica in mem (vsr_size bytes, caller-owned for the
 * replica's life) from its durable state: reads the superblock copies and
 * every journal slot through the cfg functions, classifies each slot (intact,
 * torn, faulty) and starts as a backup of its durable view (RECOVERING), or
 * starts a view change if it was the primary of that view. A fresh replica
 * (no valid superblock copy and `fresh`) formats: it writes a superblock
 * through the outbox. Returns NULL on a bad config or when no superblock
 * copy is valid and the replica is not fresh (it must not join with a
 * forgotten view). ob gets the first effects.
 */
struct vsr *vsr_init(void *mem, const struct vsr_config *cfg, const struct vsr_state *state,
                     bool fresh, struct vsr_outbox *ob);

/* Inputs. Each clears ob (the caller drained it) and fills it again. */
void vsr_on_message(struct vsr *r, const struct vsr_msg *m, struct vsr_outbox *ob);
void vsr_on_tick(struct vsr *r, struct vsr_outbox *ob);
void vsr_on_write_done(struct vsr *r, const struct vsr_write *w, struct vsr_outbox *ob);
/* A hint from the shell: the connection to replica `replica` closed (its
 * process died: kill -9 closes its sockets at once). A backup in NORMAL
 * whose primary that is then times out VSR_LOST_GRACE_TICKS from now (plus
 * its stagger) instead of timeout_ticks after the primary's last message;
 * any message from the primary meanwhile resets the timer as usual, so a
 * connection that comes back in time changes nothing. Only a timer moves:
 * safety never depends on it. Other states and replicas: no effect. */
void vsr_on_peer_lost(struct vsr *r, uint8_t replica, struct vsr_outbox *ob);
#define VSR_LOST_GRACE_TICKS 4

/* Clears the outbox and points it at caller memory. */
void vsr_outbox_init(struct vsr_outbox *ob, struct vsr_msg *msgs, size_t msgs_cap,
                     struct vsr_write *writes, size_t writes_cap, struct vsr_commit *commits,
                     size_t commits_cap, uint8_t *arena, size_t arena_cap);
void vsr_outbox_clear(struct vsr_outbox *ob);

/* Read-only views for the shell, the simulator and its checkers. */
enum vsr_status vsr_status(const struct vsr *r);
uint64_t vsr_view(const struct vsr *r);
uint64_t vsr_log_view(const struct vsr *r);
uint64_t vsr_op(const struct vsr *r);
uint64_t vsr_commit_min(const struct vsr *r);
uint64_t vsr_commit_max(const struct vsr *r);
bool vsr_is_primary(const struct vsr *r);
/* True while the replica rejoins after a wiped disk (cfg.rejoin): it does
 * not vote yet. *target gets the op it must apply first (0: not known yet). */
bool vsr_rejoining(const struct vsr *r, uint64_t *target);
/* True when every op in (commit_min, op] is canonical and held intact. */
bool vsr_log_intact(const struct vsr *r);
/* Canonical checksum of op if known (op in (commit_min, op_head]). */
bool vsr_checksum_of(const struct vsr *r, uint64_t op, uint8_t out[VSR_CHECKSUM_SIZE]);
const struct vsr_counters *vsr_counters(const struct vsr *r);
/* Checks every internal invariant; aborts through VERITY_VERIFY. */
void vsr_verify(const struct vsr *r);

/* Header codec (pure; hash from the config). */
void vsr_header_encode(const struct vsr_config *cfg, const struct vsr_header *h,
                       const uint8_t *body, uint8_t out[VSR_HEADER_SIZE]);
/* 0 when the header bytes are valid (hcheck); VERITY_ECORRUPT otherwise. */
int vsr_header_decode(const struct vsr_config *cfg, const uint8_t in[VSR_HEADER_SIZE],
                      struct vsr_header *h);
/* 0 when header + body form a valid entry. */
int vsr_entry_check(const struct vsr_config *cfg, const uint8_t *bytes, uint32_t len,
                    struct vsr_header *h);
/* The root entry's checksum (op 0) for a cluster. */
void vsr_root_checksum(const struct vsr_config *cfg, uint8_t out[VSR_CHECKSUM_SIZE]);

/* One line per op in (commit_min, op] and one for the view change, for
 * failure reports. */
void vsr_debug_dump(const struct vsr *r, void (*out)(void *arg, const char *line), void *arg);

const char *vsr_msg_name(int type);
const char *vsr_status_name(enum vsr_status s);

#endif
