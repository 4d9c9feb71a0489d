/* ckpt.h - PyTorch checkpoints (.ckpt / .pt, torch.save's zip format) read safely as a tensor table.
 *
 * Format: a zip archive (PKWARE APPNOTE; ZIP64 for files over 4 GB) holding `<archive>/data.pkl`, a pickle
 * (protocol 2, Python's pickletools documents the opcodes) of the checkpoint object, and one entry
 * `<archive>/data/<key>` per storage with its raw little-endian bytes, stored uncompressed. In the pickle a
 * storage is a persistent id ("storage", torch.HalfStorage, "<key>", "cpu", numel) and a tensor is
 * torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks).
 *
 * Safety: the reader is not a Python unpickler. It implements only the opcodes tensor checkpoints use and
 * knows only the globals they need (collections.OrderedDict, the two torch rebuild functions and the
 * storage types); any other opcode or global is refused with an error naming it, before anything of the
 * file is used. Nothing is ever executed. Tensors point into the mapped file (no copies). */
#ifndef SD_CKPT_H
#define SD_CKPT_H

#include "io/safetensors.h"

/* Is this the start of a zip archive (and so maybe a torch checkpoint)? */
int ckpt_is_zip(const void *buf, size_t size);

/* Opens path into f (tensors named as in the checkpoint's state_dict, or its top-level dict when there is
 * none; the tensors of dicts nested in it are named "key.name": {"params_ema": {...}} gives
 * "params_ema.conv_first.weight", an A1111 embedding's {"string_to_param": {"*": tensor}} gives "string_to_param.*").
 * Returns 0, or -1 (cannot read) / -2 (not a usable checkpoint) with "<path>: <problem>" in err. */
int ckpt_open(st_file *f, const char *path, char *err, size_t errlen);

/* Same over a buffer that the caller keeps alive (fuzzing). */
int ckpt_parse(st_file *f, const void *buf, size_t size, const char *path, char *err, size_t errlen);

#endif
