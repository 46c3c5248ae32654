# Sourced on the GPU machine after scripts/device_pack.sh: Deno on PATH, node_modules, data and the
# carried native libraries in place.
source .device/setup.sh
rm -rf node_modules
if [ -f .device/node_modules.txz ]; then tar -xJf .device/node_modules.txz; else tar -xzf .device/node_modules.tgz; fi
if [ -f .device/llama_tokens.tok.xz ] && [ ! -f .data/gpu/llama_tokens.tok ]; then
  mkdir -p .data/gpu && xz -T0 -d -c .device/llama_tokens.tok.xz > .data/gpu/llama_tokens.tok
fi
export DENO_NO_UPDATE_CHECK=1 NO_COLOR=1
# the native libraries built here and carried in .device (scripts that build there instead skip this)
if [ -f .device/liblte_cuda.so.xz ]; then
  mkdir -p build && xz -d -c .device/liblte_cuda.so.xz > build/liblte_cuda.so && cp .device/*.buildid .device/liblte_cpu.so build/
fi
