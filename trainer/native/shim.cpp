// The whole shim as one translation unit: every file below parses libtorch's headers (most of
// them ATen's), so compiling them together parses those headers once. On 2 cores this took 19 s
// of CPU against 45 s for the six files apart (BENCHMARKS.md, "Build").
#include "activation_checkpoint.cpp"
#include "autocast.cpp"
#include "cuda_memory.cpp"
#include "determinism.cpp"
#include "error.cpp"
#include "fused_adamw.cpp"
#include "process_group.cpp"
#include "store.cpp"
#include "transfer.cpp"
