/* recur_state_file.h: a slot's state shard on disk, and the manifest of a split state.
 *
 * A state file is the raw bytes of one slot (recur_model_state_get: info.state_bytes, the
 * layout in recur_model.h), nothing else. A model split over a tp x pp grid saves one such
 * file per rank, "<base>.shard-<pp_rank>-<tp_rank>", and rank 0 writes a JSON manifest to
 * <base> itself naming the layout and the shard files; a model on one rank writes <base>.
 * Shared by `recur logits --state-out/--state-in` and the worker's SlotOp save/load.
 *
 * Writes are atomic: the bytes go to a temporary file next to the target, are fsync'ed,
 * and the file is renamed over the target (then the directory is fsync'ed), so a reader
 * sees the old file or the new one, never a torn one, even after a crash.
 *
 * Errors: a message naming the file and the cause goes to msg[0..msg_n) when msg is
 * non-NULL (the worker sends it back to the coordinator), else it is logged at error level.
 * Ownership: nothing is kept; the caller owns every buffer. Thread-safety: none needed. */
#ifndef RECUR_STATE_FILE_H
#define RECUR_STATE_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "recur_model.h"
#include "recur_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* This rank's file under base: base itself when world_size == 1, else
 * "<base>.shard-<pp_rank>-<tp_rank>". RECUR_E_RANGE when it does not fit in out[0..n). */
recur_status_t recur_state_shard_path(const char *base, int32_t world_size, int32_t pp_rank, int32_t tp_rank,
                                      char *out, size_t n);

/* Writes data[0..n) to path atomically (see above). RECUR_E_IO on any failure (the
 * temporary file is removed). */
recur_status_t recur_state_file_write(const char *path, const void *data, size_t n, char *msg, size_t msg_n);

/* Reads exactly n bytes from the regular file path into data. RECUR_E_IO when it cannot be
 * opened or read; RECUR_E_FORMAT when its size is not n (a state of another model, layout
 * or state dtype). */
recur_status_t recur_state_file_read(const char *path, void *data, size_t n, char *msg, size_t msg_n);

/* The manifest of a state split over tp x pp ranks, written atomically to base: format,
 * version, arch, sizes, the state dtype, tp, pp and the shard file names (relative to
 * base's directory) in world-rank order. Every rank can compute it (the shards are planned
 * the same everywhere), so rank 0 writes it with no communication. The names are JSON-escaped
 * ('"', '\\', control bytes); RECUR_E_INVAL when base's file name or the arch name is not
 * valid UTF-8 (JSON text must be), and nothing is written then. */
recur_status_t recur_state_write_manifest(const char *base, const recur_model_info_t *info, int32_t tp, int32_t pp,
                                          char *msg, size_t msg_n);

#ifdef __cplusplus
}
#endif
#endif
