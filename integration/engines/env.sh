# Source this on the GPU machine:  source /tmp/engines/<engine>-<version>/env.sh   (safe under set -euo pipefail)
# install.sh puts it there. It puts the engine's site (next to this file) first on PYTHONPATH and
# sets what the engine needs offline on that host: no network, no NVLink multicast (the host
# forbids it), and a toolchain for the kernels SGLang and flashinfer JIT-compile at first use.
_ENGINE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_SITE="$_ENGINE_DIR/site"
case ":${PYTHONPATH:-}:" in *":$_SITE:"*) ;; *) export PYTHONPATH="$_SITE${PYTHONPATH:+:$PYTHONPATH}";; esac

# never try the network: model folders are local, no usage stats
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export VLLM_NO_USAGE_STATS=1 VLLM_DO_NOT_TRACK=1 DO_NOT_TRACK=1

# no NVLink multicast (NCCL NVLS, torch symmetric-memory multicast, NVSHMEM NVLS), for every child process
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
case "$(basename "$_ENGINE_DIR")" in
  vllm-*)
    # vLLM's torch-symm-mem all-reduce would use multimem ops at TP4; its default flashinfer all-reduce
    # backend ("auto") tries "mnnvl" first, which calls cuMulticastCreate: use the IPC ("trtllm") one
    export VLLM_ALLREDUCE_USE_SYMM_MEM=0 VLLM_FLASHINFER_ALLREDUCE_BACKEND=trtllm ;;
  sglang-*)
    export SGLANG_USE_SGL_FA3_KERNEL=1 ;;  # FA3 from sgl_kernel (the default), never the HF kernels hub
esac

# python3's bin dir first: `ninja` (pip package) must be on PATH for the tvm-ffi / flashinfer JIT builds
_PYBIN="$(dirname "$(python3 -c 'import sys; print(sys.executable)')")"
case ":$PATH:" in *":$_PYBIN:"*) ;; *) export PATH="$_PYBIN:$PATH";; esac

# CUDA toolkit (nvcc 13) for the JIT builds: keep $CUDA_HOME if set, else the first dir with bin/nvcc + include/cuda_runtime.h
if [ -z "${CUDA_HOME:-}" ]; then
  _NVCC="$(command -v nvcc 2>/dev/null || true)"
  for _c in /usr/local/cuda ${_NVCC:+"$(dirname "$(dirname "$(readlink -f "$_NVCC")")")"} /usr/local/cuda-13* /usr/lib/cuda; do
    if [ -x "$_c/bin/nvcc" ] && [ -f "$_c/include/cuda_runtime.h" ]; then export CUDA_HOME="$_c"; break; fi
  done
fi
[ -n "${CUDA_HOME:-}" ] && case ":$PATH:" in *":$CUDA_HOME/bin:"*) ;; *) export PATH="$CUDA_HOME/bin:$PATH";; esac

# flashinfer's JIT sources include <cublasLt.h>: a toolkit without the cuBLAS headers falls back to the
# pip nvidia-cublas wheel's headers (searched after the toolkit's own)
if [ -n "${CUDA_HOME:-}" ] && [ ! -f "$CUDA_HOME/include/cublasLt.h" ]; then
  _NVINC="$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "include"))' 2>/dev/null || true)"
  if [ -f "$_NVINC/cublasLt.h" ]; then export CPLUS_INCLUDE_PATH="${CPLUS_INCLUDE_PATH:+$CPLUS_INCLUDE_PATH:}$_NVINC"; fi
fi
# flashinfer links its JIT modules with -lcuda: without an unversioned libcuda.so (toolkit stubs or ldconfig),
# point the linker at the driver's libcuda.so.1 through a private symlink
if [ -n "${CUDA_HOME:-}" ] && [ ! -e "$CUDA_HOME/lib64/stubs/libcuda.so" ] && [ ! -e "$CUDA_HOME/lib64/libcuda.so" ] \
   && ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so '; then
  _DRV="$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 /{print $NF; exit}' || true)"
  if [ -n "$_DRV" ]; then
    mkdir -p "$_ENGINE_DIR/libcuda-link" && ln -sf "$_DRV" "$_ENGINE_DIR/libcuda-link/libcuda.so"
    export LIBRARY_PATH="$_ENGINE_DIR/libcuda-link${LIBRARY_PATH:+:$LIBRARY_PATH}"
  fi
fi
unset _ENGINE_DIR _SITE _PYBIN _NVINC _DRV _NVCC _c
