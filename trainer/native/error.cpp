#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

#include "error.h"
#include "imagen_native.h"

char* imagen_error(const std::string& message) {
  char* out = static_cast<char*>(std::malloc(message.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, message.c_str(), message.size() + 1);
  }
  return out;
}

extern "C" void imagen_free(void* ptr) { std::free(ptr); }
