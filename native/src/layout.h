/*
 * layout.h — layout() and constants(): flowgate.h as this compiler laid it
 * out. The TypeScript decoder reads offsets from here instead of hard-coding
 * them, and a test pins the two against each other.
 */
#pragma once

#include <napi.h>

namespace fg
{

Napi::Value Layout(const Napi::CallbackInfo &info);
Napi::Value Constants(const Napi::CallbackInfo &info);

} // namespace fg
