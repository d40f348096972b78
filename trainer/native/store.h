// The store handle shared by the TCPStore and process-group parts of the shim.
#pragma once
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

struct imagen_store {
  c10::intrusive_ptr<c10d::TCPStore> inner;
};
