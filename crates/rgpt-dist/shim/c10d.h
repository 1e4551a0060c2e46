// The C interface of the c10d shim: what `src/ffi.rs` declares. Every
// function that can fail returns NULL on success or a malloc'd message
// (free it with rgpt_dist_free_error); C++ exceptions never cross into Rust.
// Tensors are tch's `C_tensor`, which is a `torch::Tensor*`.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rgpt_store rgpt_store;
typedef struct rgpt_group rgpt_group;

void rgpt_dist_free_error(char* message);

char* rgpt_store_new(const char* host, uint16_t port, int is_server, int world_size,
                     int64_t timeout_ms, rgpt_store** out);
char* rgpt_store_set(rgpt_store* store, const char* key, const uint8_t* value, size_t len);
// *value is malloc'd; free it with rgpt_dist_free_bytes.
char* rgpt_store_get(rgpt_store* store, const char* key, uint8_t** value, size_t* len);
void rgpt_dist_free_bytes(uint8_t* value);
void rgpt_store_free(rgpt_store* store);

char* rgpt_group_gloo_new(rgpt_store* store, int rank, int world_size, int64_t timeout_ms,
                          const char* hostname, rgpt_group** out);
// Present only when the crate was built with NCCL (cfg rgpt_nccl).
char* rgpt_group_nccl_new(rgpt_store* store, int rank, int world_size, int64_t timeout_ms,
                          int device, rgpt_group** out);
void rgpt_group_free(rgpt_group* group);

// op: 0 sum, 1 avg, 4 max (c10d::ReduceOp's numbering).
char* rgpt_all_reduce(rgpt_group* group, void* tensor, int op, int64_t timeout_ms);
char* rgpt_broadcast(rgpt_group* group, void* tensor, int root, int64_t timeout_ms);
// output: [world_size, ...input's shape], contiguous, input's dtype.
char* rgpt_all_gather(rgpt_group* group, void* output, void* input, int64_t timeout_ms);
// input: world_size * output.numel() elements; output gets this rank's chunk.
char* rgpt_reduce_scatter(rgpt_group* group, void* output, void* input, int op,
                          int64_t timeout_ms);
char* rgpt_barrier(rgpt_group* group, int64_t timeout_ms);

#ifdef __cplusplus
}
#endif
