/* recur_state_ckpt.h: session checkpoints on disk, loadable by any tp x pp layout of the
 * same model, and the single-file form they are exported and imported in.
 *
 * A checkpoint is a manifest (JSON, at the path the coordinator chooses, e.g.
 * "<session dir>/s-<hash>.ckpt") plus one shard file per rank of the layout that saved it,
 * "<manifest path>.g<generation>.shard-<pp_rank>-<tp_rank>": the raw bytes of that rank's
 * state shard (worker/recur_model.h "Slots"). The manifest names:
 *   - the model: arch, n_vocab, n_layer, n_embd, n_head, head_size, head_size_k, the
 *     content hash of its files (recur_ckpt_content_hash) and the state dtype;
 *   - the layout: tp, pp, and per shard its file, rank, layers [layer_begin, layer_end),
 *     heads [head_begin, head_begin + n_head), size and CRC-32 (zlib's);
 *   - the generation and the session record (recur_ckpt_meta_t: id, model id, tokens).
 * Saving writes every shard file atomically (recur_state_file_write: temporary file, fsync,
 * rename, fsync of the directory), then the manifest the same way: the manifest's rename is
 * the commit. Each save uses a new generation, so the files of the previous checkpoint stay
 * intact until the new manifest is in place (a crash in between leaves the old checkpoint
 * loadable); old generations are removed after the commit (recur_ckpt_remove).
 *
 * Loading checks the manifest (format, version, the model identity against this model's:
 * a state of another model, dimensions or state dtype is refused with a message saying
 * which), then reads the shard files this rank needs, checks each one's size and CRC
 * (truncated or corrupt files are refused), and rebuilds this rank's shard from them
 * (recur_state_reshard): the state layout (recur_state_layout_t) says which bytes of a
 * layer are per head (RWKV-7 wkv; xLSTM C, n, m) and which are replicated across the TP
 * group (RWKV-7's token-shift vectors), so a state saved under any layout loads under any
 * other. Nothing is written to the destination unless every check passed.
 *
 * Export container (one file, what SessionRequest EXPORT/IMPORT carry):
 *   "RECURCK1" (8 bytes), u32 LE manifest length, the manifest JSON, then the shard files'
 *   bytes in manifest order (sizes and CRCs in the manifest).
 *
 * Errors: a message naming the file and the cause goes to msg[0..msg_n) when msg is
 * non-NULL, else it is logged. Ownership: noted per function. Thread-safety: none needed
 * (no shared state). */
#ifndef RECUR_STATE_CKPT_H
#define RECUR_STATE_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "recur_dtype.h"
#include "recur_model.h"
#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RECUR_CKPT_FORMAT "recur-session-checkpoint"
#define RECUR_CKPT_VERSION 1
#define RECUR_CKPT_MAX_MANIFEST_BYTES ((size_t)64 << 20)
#define RECUR_CKPT_MAX_SHARDS 4096

/* What a state belongs to. Two identities equal field by field hold interchangeable states. */
typedef struct recur_ckpt_identity {
    char arch[32];
    int32_t n_vocab, n_layer, n_embd, n_head, head_size, head_size_k;
    recur_dtype_t state_dtype;
    char content_hash[80];
} recur_ckpt_identity_t;

/* The identity of a loaded model (info) with its files' content hash. */
void recur_ckpt_identity_of(const recur_model_info_t *info, const char *content_hash, recur_ckpt_identity_t *id);

/* A hash of the model files' contents that does not depend on where they are: FNV-1a 64
 * over, for each file (sorted by name; a directory or an index json: its *.safetensors,
 * *.bin and *.json files), its name, its size and 64 KiB sampled from it (the first 16 KiB,
 * 11 evenly spaced 4 KiB blocks, the last 4 KiB). Weights that differ anywhere differ in the
 * sampled blocks with near certainty; reading 64 KiB per file costs nothing at load. Writes
 * "fnv1a64s:<16 hex digits>" to out. RECUR_E_IO when the path cannot be read. */
recur_status_t recur_ckpt_content_hash(const char *model_path, char *out, size_t n);

/* ---- the state layout: which bytes of a layer are per head */

#define RECUR_STATE_MAX_SEGS 3
typedef struct recur_state_layout {
    int32_t n_layer, n_head;               /* the whole model's                           */
    int32_t n_seg;                         /* segments per layer, in order                */
    size_t  seg_bytes[RECUR_STATE_MAX_SEGS];   /* per head (per_head) or per layer        */
    uint8_t per_head[RECUR_STATE_MAX_SEGS];
} recur_state_layout_t;

/* RWKV-7: [ffn_x, att_x] replicated (2 C f32), wkv per head (N*N state_dtype);
 * xLSTM: C per head (DQK*DV state_dtype), n per head (DQK f32), m per head (f32).
 * RECUR_E_UNSUPPORTED for another arch. */
recur_status_t recur_state_layout_init(const recur_ckpt_identity_t *id, recur_state_layout_t *l);
/* Bytes of a shard holding n_layers layers and n_heads heads. */
size_t recur_state_layout_shard_bytes(const recur_state_layout_t *l, int32_t n_layers, int32_t n_heads);

/* One rank's part of a saved state. */
typedef struct recur_ckpt_shard {
    int32_t  pp_rank, tp_rank;
    int32_t  layer_begin, layer_end;       /* layers [layer_begin, layer_end)             */
    int32_t  head_begin, n_head;           /* heads [head_begin, head_begin + n_head)     */
    uint64_t bytes;
    uint32_t crc32;
    char     file[256];                    /* a name in the manifest's directory          */
} recur_ckpt_shard_t;

/* This model's shard (info->shard), with bytes = info->state_bytes. */
void recur_ckpt_shard_of(const recur_model_info_t *info, recur_ckpt_shard_t *sh);

/* dst (shard *dst_sh of layout l) := the bytes of the same layers and heads taken from the
 * source shards (src[i] with its bytes in src_buf[i]; a NULL src_buf[i] is a shard not
 * read, which must then not be needed). RECUR_E_FORMAT when the sources do not cover dst
 * or a source's size does not fit l; dst may be partly written then. */
recur_status_t recur_state_reshard(const recur_state_layout_t *l, const recur_ckpt_shard_t *dst_sh, void *dst,
                                   int32_t n_src, const recur_ckpt_shard_t *src, const void *const *src_buf,
                                   char *msg, size_t msg_n);
/* 1 when shard s holds bytes that dst needs (a layer of dst and, for per-head parts, one of
 * its heads; replicated parts are taken from the first such shard in manifest order). */
int recur_state_reshard_needs(const recur_state_layout_t *l, const recur_ckpt_shard_t *dst,
                              int32_t n_src, const recur_ckpt_shard_t *src, int32_t s);

/* ---- the manifest */

/* The session record a checkpoint carries (the coordinator's). pending and unsent are
 * malloc'ed and owned by whoever holds the struct (recur_ckpt_meta_free). */
#define RECUR_CKPT_MAX_UNSENT 1024
typedef struct recur_ckpt_meta {
    char     session_id[129];
    char     model[257];
    uint64_t n_consumed;                   /* tokens the state has consumed               */
    int32_t *pending;                      /* conversation tokens not yet consumed        */
    size_t   n_pending;
    uint8_t *unsent;                       /* generated bytes the client was not sent (a  */
    size_t   n_unsent;                     /* stop string that ended the latest turn);
                                              manifest key "unsent", byte values, optional
                                              (absent: none), at most RECUR_CKPT_MAX_UNSENT */
    uint64_t created_unix_ms, last_used_unix_ms;
} recur_ckpt_meta_t;
void recur_ckpt_meta_free(recur_ckpt_meta_t *m);

typedef struct recur_ckpt_manifest {
    recur_ckpt_identity_t id;
    char     checkpoint_id[257];           /* informational: where the weights were       */
    int32_t  tp, pp;
    uint64_t generation;
    uint64_t state_bytes;                  /* the sum of the shards' bytes (the TP-replicated
                                              parts count once per shard)                 */
    recur_ckpt_meta_t meta;
    int32_t  n_shards;
    recur_ckpt_shard_t *shards;            /* malloc'ed                                   */
} recur_ckpt_manifest_t;
void recur_ckpt_manifest_free(recur_ckpt_manifest_t *m);   /* frees the members; NULL-safe */

/* Parses and checks a manifest (format, version, fields, shard names without '/', shard
 * ranges and sizes against the layout, every (layer, head) covered). what names it in
 * messages. RECUR_E_FORMAT with the reason. */
recur_status_t recur_ckpt_manifest_parse(const char *json, size_t n, const char *what, recur_ckpt_manifest_t *m,
                                         char *msg, size_t msg_n);
/* Reads path (at most RECUR_CKPT_MAX_MANIFEST_BYTES) and parses it. RECUR_E_IO / FORMAT. */
recur_status_t recur_ckpt_manifest_read(const char *path, recur_ckpt_manifest_t *m, char *msg, size_t msg_n);
/* The manifest as JSON (malloc'ed, NUL-terminated; NULL when out of memory). */
char *recur_ckpt_manifest_json(const recur_ckpt_manifest_t *m);
/* Writes it to path atomically. */
recur_status_t recur_ckpt_manifest_write(const char *path, const recur_ckpt_manifest_t *m, char *msg, size_t msg_n);

/* RECUR_OK when the manifest's model and state dtype are want's; else RECUR_E_FORMAT with
 * "<what>: saved from another model ..." / "... state dtype bf16, this server keeps f32". */
recur_status_t recur_ckpt_check_identity(const recur_ckpt_manifest_t *m, const recur_ckpt_identity_t *want,
                                         const char *what, char *msg, size_t msg_n);

/* Checks a checkpoint path that came in a message (SlotOp SAVE, LOAD, DELETE) before any file
 * is touched, so that a wrong or hostile coordinator cannot make a worker write, read or
 * delete files elsewhere: the file name must be safe (recur_name_is_safe, 200 bytes), no
 * component of the path may be "..", and with dir non-NULL the path's directory must be dir
 * (both resolved with realpath, so a symlinked detour is refused too). RECUR_E_INVAL with
 * the reason in msg. */
recur_status_t recur_ckpt_path_check(const char *path, const char *dir, char *msg, size_t msg_n);

/* "<manifest>.g<gen>.shard-<pp>-<tp>"; RECUR_E_RANGE when it does not fit. */
recur_status_t recur_ckpt_shard_path(const char *manifest, uint64_t gen, int32_t pp_rank, int32_t tp_rank, char *out,
                                     size_t n);

/* ---- saving and loading one rank's shard (the worker calls these on every rank) */

/* Writes this rank's shard file (data[0..sh->bytes)) for generation gen; sh->crc32 and
 * sh->file get set. */
recur_status_t recur_ckpt_write_shard(const char *manifest, uint64_t gen, recur_ckpt_shard_t *sh, const void *data,
                                      char *msg, size_t msg_n);
/* Loads this rank's shard `mine` (of a model with identity want) from the checkpoint at
 * path into buf[0..mine->bytes): see the top of this file. *bytes_read gets the bytes read
 * from shard files. Nothing in buf is meaningful on failure. */
recur_status_t recur_ckpt_load(const char *path, const recur_ckpt_identity_t *want, const recur_ckpt_shard_t *mine,
                               void *buf, uint64_t *bytes_read, char *msg, size_t msg_n);
/* Removes the shard files "<path>.g<G>.shard-*" with G != keep_gen (keep_gen 0: all of
 * them) and, when with_manifest, the manifest first. Missing files are fine. */
recur_status_t recur_ckpt_remove(const char *path, uint64_t keep_gen, int with_manifest);

/* ---- RWKV-7 state tuning: an initial state per layer */

/* Loads an RWKV-7 state-tuning file (safetensors; `scripts/pth_to_safetensors.py` converts
 * RWKV-PEFT's .pth): blocks.<l>.att.time_state [H][N][N] for every layer l (f32/f16/bf16),
 * indexed [head][value][key] like the wkv state (RWKV-PEFT's state kernels keep the same
 * [value][key] order as BlinkDL's), plus nothing else named *time_state*; the token-shift
 * vectors start at zero. Builds this rank's shard `mine` in buf, rounding to the state
 * dtype. RECUR_E_FORMAT when shapes or layers do not match the model. */
recur_status_t recur_ckpt_load_tuned(const char *path, const recur_ckpt_identity_t *want,
                                     const recur_ckpt_shard_t *mine, void *buf, char *msg, size_t msg_n);

/* ---- the export container */

/* The checkpoint at path as one buffer (*out malloc'ed, *n bytes), every shard's CRC
 * checked on the way. */
recur_status_t recur_ckpt_export(const char *path, uint8_t **out, size_t *n, char *msg, size_t msg_n);
/* The manifest of an export blob (parsed and checked; the shards are not looked at). */
recur_status_t recur_ckpt_blob_manifest(const uint8_t *blob, size_t n, recur_ckpt_manifest_t *m, char *msg,
                                        size_t msg_n);
/* Checks blob[0..n) (container, manifest, identity against want, every shard's size and
 * CRC) and writes it as the checkpoint at path with generation gen and the session record
 * meta (the blob's own record is replaced). RECUR_E_FORMAT for a bad blob (nothing
 * written), RECUR_E_IO for the files. */
recur_status_t recur_ckpt_import(const uint8_t *blob, size_t n, const recur_ckpt_identity_t *want, const char *path,
                                 uint64_t gen, const recur_ckpt_meta_t *meta, char *msg, size_t msg_n);

#ifdef __cplusplus
}
#endif
#endif
