# Sourced on the GPU machine after scripts/device_pack.sh: Deno on PATH, node_modules and data in place.
source .device/setup.sh
rm -rf node_modules && tar -xzf .device/node_modules.tgz
if [ -f .device/llama_tokens.tok.xz ] && [ ! -f .data/gpu/llama_tokens.tok ]; then
  mkdir -p .data/gpu && xz -T0 -d -c .device/llama_tokens.tok.xz > .data/gpu/llama_tokens.tok
fi
export DENO_NO_UPDATE_CHECK=1 NO_COLOR=1
