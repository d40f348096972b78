// Turns C++ exceptions into the shim's malloc'd error strings.
#pragma once
#include <c10/util/Exception.h>

#include <exception>
#include <string>

char* imagen_error(const std::string& message);

// Runs `body`; returns NULL, or the message of whatever it threw.
template <typename F>
char* imagen_guard(F&& body) {
  try {
    body();
    return nullptr;
  } catch (const c10::Error& e) {
    return imagen_error(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return imagen_error(e.what());
  } catch (...) {
    return imagen_error("unknown C++ exception");
  }
}
