{
  # node-gyp build of the flowgate native addon: C++17 over node-addon-api
  # (with C++ exceptions, so bpf() failures become JS Errors) and Debian's
  # libbpf. Build from the repo root: npx node-gyp rebuild --directory native
  "targets": [
    {
      "target_name": "flowgate_native",
      "sources": [
        "src/addon.cc",
        "src/attach.cc",
        "src/config.cc",
        "src/datapath.cc",
        "src/errors.cc",
        "src/flow_block.cc",
        "src/flow_slots.cc",
        "src/info.cc",
        "src/layout.cc",
        "src/libbpf_log.cc",
        "src/maps.cc",
        "src/memory.cc",
        "src/open.cc",
        "src/pins.cc",
        "src/program.cc",
        "src/state.cc",
        "src/testrun.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "../datapath/include"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
      "libraries": ["-lbpf", "-lelf", "-lz"]
    }
  ]
}
