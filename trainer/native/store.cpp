// c10d::TCPStore: the key-value store that torchrun and PyTorch DDP rendezvous on.
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "error.h"
#include "imagen_native.h"
#include "store.h"

extern "C" {

char* imagen_store_new(const char* host, uint16_t port, bool is_server, int64_t num_workers,
                       bool wait_workers, int64_t timeout_ms, imagen_store** out) {
  return imagen_guard([&] {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server;
    if (num_workers >= 0) {
      opts.numWorkers = static_cast<std::size_t>(num_workers);
    }
    opts.waitWorkers = wait_workers;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    *out = new imagen_store{std::move(store)};
  });
}

char* imagen_store_set(imagen_store* store, const char* key, const uint8_t* data, size_t len) {
  return imagen_guard([&] {
    std::vector<uint8_t> value(data, data + len);
    store->inner->set(std::string(key), value);
  });
}

char* imagen_store_get(imagen_store* store, const char* key, uint8_t** data, size_t* len) {
  return imagen_guard([&] {
    std::vector<uint8_t> value = store->inner->get(std::string(key));
    // malloc(0) may return NULL; always hand back a freeable pointer.
    auto* buffer = static_cast<uint8_t*>(std::malloc(value.empty() ? 1 : value.size()));
    TORCH_CHECK(buffer != nullptr, "out of memory copying store value of ", value.size(), " bytes");
    if (!value.empty()) {
      std::memcpy(buffer, value.data(), value.size());
    }
    *data = buffer;
    *len = value.size();
  });
}

char* imagen_store_add(imagen_store* store, const char* key, int64_t delta, int64_t* out) {
  return imagen_guard([&] { *out = store->inner->add(std::string(key), delta); });
}

char* imagen_store_check(imagen_store* store, const char* key, bool* present) {
  return imagen_guard([&] { *present = store->inner->check({std::string(key)}); });
}

char* imagen_store_delete(imagen_store* store, const char* key, bool* deleted) {
  return imagen_guard([&] { *deleted = store->inner->deleteKey(std::string(key)); });
}

char* imagen_store_set_timeout(imagen_store* store, int64_t timeout_ms) {
  return imagen_guard([&] { store->inner->setTimeout(std::chrono::milliseconds(timeout_ms)); });
}

uint16_t imagen_store_port(const imagen_store* store) { return store->inner->getPort(); }

void imagen_store_free(imagen_store* store) { delete store; }

}  // extern "C"
