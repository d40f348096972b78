// c10d process groups and DDP's gradient reducer, for data-parallel training.
//
// On GPUs the collectives are c10d::ProcessGroupNCCL, exactly what PyTorch DDP runs. For tests on
// machines without a GPU there is a small CPU backend that moves tensors through the rendezvous
// TCPStore (the torch wheel ships no Gloo headers, so ProcessGroupGloo cannot be constructed from
// here). Both sit under the same c10d::ProcessGroup, so c10d's Reducer (bucketing, autograd-hook
// overlap, accumulation without sync) and broadcast_coalesced run unchanged on either.
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <c10/cuda/CUDAFunctions.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "error.h"
#include "imagen_native.h"
#include "store.h"

struct imagen_pg {
  c10::intrusive_ptr<c10d::ProcessGroup> inner;
};

struct imagen_reducer {
  std::unique_ptr<c10d::Reducer> inner;
};

namespace {

// Collectives over a c10d::Store: every rank publishes its bytes under a per-call key and reads
// every other rank's; the reduction runs in rank order, so every rank computes the same bits.
// Ranks issue collectives in the same order (as with any c10d backend), which numbers them.
class StoreBackend final : public c10d::Backend {
 public:
  StoreBackend(c10::intrusive_ptr<c10d::Store> store, int rank, int size)
      : Backend(rank, size), store_(std::move(store)) {}

  const std::string getBackendName() const override { return "imagen-cpu-store"; }

  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors,
                                           const c10d::AllreduceOptions& opts) override {
    bool average = opts.reduceOp == c10d::ReduceOp::AVG;
    TORCH_CHECK(average || opts.reduceOp == c10d::ReduceOp::SUM,
                "the CPU test backend reduces by SUM or AVG only");
    std::string call = next_call("allreduce");
    publish(call + "/" + std::to_string(getRank()), tensors);
    size_t parts = parts_of(tensors);
    std::vector<at::Tensor> sums;
    for (int q = 0; q < getSize(); ++q) {
      std::vector<at::Tensor> theirs = fetch(call, q, tensors);
      for (size_t i = 0; i < tensors.size(); ++i) {
        if (q == 0) {
          sums.push_back(theirs[i]);
        } else {
          sums[i].add_(theirs[i]);
        }
      }
    }
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (average) {
        sums[i].div_(getSize());
      }
      tensors[i].copy_(sums[i]);
    }
    finish(call, all_ranks(), parts);
    return completed(tensors);
  }

  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& tensors,
                                           const c10d::BroadcastOptions& opts) override {
    std::string call = next_call("broadcast");
    if (getRank() == opts.rootRank) {
      publish(call + "/" + std::to_string(opts.rootRank), tensors);
    } else {
      std::vector<at::Tensor> theirs = fetch(call, static_cast<int>(opts.rootRank), tensors);
      for (size_t i = 0; i < tensors.size(); ++i) {
        tensors[i].copy_(theirs[i]);
      }
    }
    finish(call, {static_cast<int>(opts.rootRank)}, parts_of(tensors));
    return completed(tensors);
  }

  c10::intrusive_ptr<c10d::Work> barrier(const c10d::BarrierOptions& /*opts*/) override {
    std::string call = next_call("barrier");
    std::vector<at::Tensor> none;
    publish(call + "/" + std::to_string(getRank()), none);
    for (int q = 0; q < getSize(); ++q) {
      fetch(call, q, none);
    }
    finish(call, all_ranks(), parts_of(none));
    return completed(none);
  }

 private:
  std::string next_call(const char* op) { return std::string(op) + "/" + std::to_string(seq_++); }

  static void check_cpu(const at::Tensor& t) {
    TORCH_CHECK(t.device().is_cpu(), "the CPU test backend takes CPU tensors; got one on ",
                t.device(), " (use the NCCL backend on GPUs)");
  }

  // The TCPStore refuses values over 8 MiB, so a collective's bytes travel in parts of at most
  // 4 MiB under `key#0`, `key#1`, ...; every rank knows the count from the tensors' sizes.
  static constexpr size_t kPartBytes = size_t{4} << 20;

  static size_t parts_of(const std::vector<at::Tensor>& tensors) {
    size_t n = 0;
    for (const auto& t : tensors) {
      n += t.nbytes();
    }
    return n == 0 ? 1 : (n + kPartBytes - 1) / kPartBytes;
  }

  static std::string part_key(const std::string& key, size_t i) {
    return key + "#" + std::to_string(i);
  }

  void publish(const std::string& key, const std::vector<at::Tensor>& tensors) {
    std::vector<uint8_t> bytes;
    for (const auto& t : tensors) {
      check_cpu(t);
      at::Tensor c = t.contiguous();
      auto* p = static_cast<const uint8_t*>(c.data_ptr());
      bytes.insert(bytes.end(), p, p + c.nbytes());
    }
    size_t parts = parts_of(tensors);
    for (size_t i = 0; i < parts; ++i) {
      size_t begin = std::min(bytes.size(), i * kPartBytes);
      size_t end = std::min(bytes.size(), begin + kPartBytes);
      store_->set(part_key(key, i), std::vector<uint8_t>(bytes.begin() + begin, bytes.begin() + end));
    }
  }

  // Rank q's tensors of `call`, shaped like `like`.
  std::vector<at::Tensor> fetch(const std::string& call, int q,
                                const std::vector<at::Tensor>& like) {
    std::vector<uint8_t> bytes;
    try {
      for (size_t i = 0; i < parts_of(like); ++i) {
        std::vector<uint8_t> part = store_->get(part_key(call + "/" + std::to_string(q), i));
        bytes.insert(bytes.end(), part.begin(), part.end());
      }
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "rank ", q, " never contributed to collective ", call, " (this is rank ",
                  getRank(), " of ", getSize(), "): ", e.what());
    }
    std::vector<at::Tensor> out;
    size_t offset = 0;
    for (const auto& t : like) {
      at::Tensor r = at::empty(t.sizes(), t.options().memory_format(at::MemoryFormat::Contiguous));
      TORCH_CHECK(offset + r.nbytes() <= bytes.size(), "collective ", call, ": rank ", q,
                  " sent ", bytes.size(), " bytes, fewer than this rank expects");
      std::memcpy(r.data_ptr(), bytes.data() + offset, r.nbytes());
      offset += r.nbytes();
      out.push_back(r);
    }
    TORCH_CHECK(offset == bytes.size(), "collective ", call, ": rank ", q, " sent ", bytes.size(),
                " bytes, this rank expects ", offset, " (ranks disagree on the tensors)");
    return out;
  }

  // Every rank counts itself done after reading; the last one removes the keys that `publishers`
  // wrote, so the store never grows with the number of steps. Rank 0 hosts the store, so it
  // leaves a collective only once every rank has read: a rank 0 that returned from the last
  // collective and exited would otherwise take the store away from a rank still reading.
  void finish(const std::string& call, const std::vector<int>& publishers, size_t parts) {
    bool last = store_->add(call + "/done", 1) == getSize();
    if (last) {
      for (int q : publishers) {
        for (size_t i = 0; i < parts; ++i) {
          store_->deleteKey(part_key(call + "/" + std::to_string(q), i));
        }
      }
      store_->deleteKey(call + "/done");
      if (getRank() != 0) {
        store_->set(call + "/released", std::vector<uint8_t>{1});
      }
    } else if (getRank() == 0) {
      store_->get(call + "/released");
      store_->deleteKey(call + "/released");
    }
  }

  std::vector<int> all_ranks() const {
    std::vector<int> ranks(getSize());
    for (int q = 0; q < getSize(); ++q) {
      ranks[q] = q;
    }
    return ranks;
  }

  static c10::intrusive_ptr<c10d::Work> completed(const std::vector<at::Tensor>& tensors) {
    auto future =
        c10::make_intrusive<c10::ivalue::Future>(c10::ListType::create(c10::TensorType::get()));
    future->markCompleted(c10::IValue(tensors));
    return c10d::Work::create_from_future(future);
  }

  c10::intrusive_ptr<c10d::Store> store_;
  uint64_t seq_ = 0;
};

std::vector<at::Tensor> tensor_list(void* const* tensors, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(*static_cast<at::Tensor*>(tensors[i]));
  }
  return out;
}

}  // namespace

extern "C" {

char* imagen_pg_new(imagen_store* store, const char* prefix, int rank, int size, int backend,
                    int64_t timeout_ms, int device_index, imagen_pg** out) {
  return imagen_guard([&] {
    auto scoped = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), store->inner);
    auto pg = c10::make_intrusive<c10d::ProcessGroup>(scoped, rank, size);
    if (backend == IMAGEN_BACKEND_NCCL) {
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(device_index));
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = std::chrono::milliseconds(timeout_ms);
      auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(scoped, rank, size, options);
      nccl->setSequenceNumberForGroup();
      pg->setDefaultBackend(c10d::ProcessGroup::BackendType::NCCL);
      pg->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, nccl);
    } else {
      TORCH_CHECK(backend == IMAGEN_BACKEND_CPU_STORE, "unknown backend ", backend);
      auto cpu = c10::make_intrusive<StoreBackend>(scoped, rank, size);
      pg->setDefaultBackend(c10d::ProcessGroup::BackendType::CUSTOM);
      pg->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::CUSTOM, cpu);
    }
    *out = new imagen_pg{std::move(pg)};
  });
}

char* imagen_pg_allreduce(imagen_pg* pg, void* const* tensors, size_t n, bool average) {
  return imagen_guard([&] {
    c10d::AllreduceOptions opts;
    opts.reduceOp = average ? c10d::ReduceOp::AVG : c10d::ReduceOp::SUM;
    for (size_t i = 0; i < n; ++i) {
      std::vector<at::Tensor> one{*static_cast<at::Tensor*>(tensors[i])};
      pg->inner->allreduce(one, opts)->wait();
    }
  });
}

char* imagen_pg_broadcast(imagen_pg* pg, void* const* tensors, size_t n, int root,
                          int64_t bucket_bytes) {
  return imagen_guard([&] {
    c10d::broadcast_coalesced(pg->inner, tensor_list(tensors, n),
                              static_cast<size_t>(bucket_bytes), root);
  });
}

char* imagen_pg_barrier(imagen_pg* pg) {
  return imagen_guard([&] { pg->inner->barrier()->wait(); });
}

void imagen_pg_free(imagen_pg* pg, int clean) {
  if (pg == nullptr) return;
  // After a clean finish, as torch.distributed.destroy_process_group: NCCL's communicators are
  // finalised (without it, ~ProcessGroupNCCL warns and aborts them). That waits for the peers,
  // so a rank that failed (its peers told to exit, or half a backward's buckets in flight)
  // aborts them instead of hanging. Nothing to report on the way out.
  try {
    if (clean) {
      pg->inner->shutdown();
    } else {
      pg->inner->abort();
    }
  } catch (...) {
  }
  delete pg;
}

char* imagen_reducer_new(imagen_pg* pg, void* const* params, size_t n, int64_t bucket_bytes,
                         int64_t first_bucket_bytes, imagen_reducer** out, size_t* buckets) {
  return imagen_guard([&] {
    std::vector<at::Tensor> tensors = tensor_list(params, n);
    std::vector<bool> sparse(n, false);
    // As DDP does: assign in parameter order, then reverse, so that the parameters whose
    // gradients the backward pass produces first fill the first bucket.
    auto indices = std::get<0>(c10d::compute_bucket_assignment_by_size(
        tensors, {static_cast<size_t>(first_bucket_bytes), static_cast<size_t>(bucket_bytes)},
        sparse));
    std::reverse(indices.begin(), indices.end());
    *buckets = indices.size();
    // No list of per-bucket caps: the Reducer would size the buckets it rebuilds after the first
    // step by it (the first bucket in gradient order would get the last cap). Without one it
    // rebuilds with first_bucket_bytes and then bucket_bytes, as DDP does by default.
    auto reducer = std::make_unique<c10d::Reducer>(
        tensors, std::move(indices), pg->inner, sparse, bucket_bytes,
        /*find_unused_parameters=*/false, /*gradient_as_bucket_view=*/false,
        std::unordered_map<size_t, std::string>{}, first_bucket_bytes,
        /*skip_all_reduce_unused_params=*/false, /*use_python_reducer=*/false,
        /*bucket_bytes_cap_list=*/std::vector<int64_t>{});
    *out = new imagen_reducer{std::move(reducer)};
  });
}

char* imagen_reducer_prepare(imagen_reducer* reducer) {
  return imagen_guard([&] {
    // After the first synchronised step, buckets follow the order in which gradients arrived.
    reducer->inner->rebuild_buckets();
    reducer->inner->prepare_for_backward({});
  });
}

void imagen_reducer_free(imagen_reducer* reducer) {
  try {
    delete reducer;
  } catch (...) {
    // ~Reducer may throw if a backward is half done; nothing useful can be done at teardown.
  }
}

}  // extern "C"

// NCCL as compiled in: this file includes ProcessGroupNCCL.hpp, which proves on every machine, GPU
// or not, that the CUDA and NCCL include dirs are complete.
extern "C" {

bool imagen_nccl_compiled(void) {
#ifdef USE_C10D_NCCL
  return true;
#else
  return false;
#endif
}

char* imagen_nccl_version(int64_t* version) {
  // NCCL_VERSION_CODE is the version of the headers this shim was compiled against.
  return imagen_guard([&] { *version = NCCL_VERSION_CODE; });
}

}  // extern "C"
