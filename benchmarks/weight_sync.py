"""Weight sync into the vLLM engine and its sleep/wake, on one GPU (the colocated mode).

    python benchmarks/weight_sync.py

Loads the embedded SmolLM2's full state dict (bf16, on the GPU) into a running `VLLMEngine` four times
(CUDA IPC handles, loaded by a worker extension through `collective_rpc`, then a prefix-cache reset) and times
`sleep(1)` + `wake_up()` three times. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import time


def main() -> None:
    import torch
    from agent_rl.embedded_model import embedded_model_dir
    from agent_rl.engines.vllm import VLLMEngine
    from transformers import AutoModelForCausalLM

    model_dir = embedded_model_dir()
    engine = VLLMEngine(model_dir, gpu_memory_utilization=0.3, max_model_len=2048, seed=0,
                        enforce_eager=os.environ.get("BENCH_EAGER") == "1")
    state = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().state_dict()
    loop = asyncio.new_event_loop()
    result: dict[str, list[float] | int] = {"update_weights_s": [], "sleep_wake_s": [], "params": sum(v.numel() for v in state.values())}
    for _ in range(4):
        started = time.perf_counter()
        loop.run_until_complete(engine.update_weights(state))
        torch.cuda.synchronize()
        result["update_weights_s"].append(round(time.perf_counter() - started, 4))
    for _ in range(3):
        started = time.perf_counter()
        loop.run_until_complete(engine.sleep(1))
        loop.run_until_complete(engine.wake_up())
        result["sleep_wake_s"].append(round(time.perf_counter() - started, 4))
    print(json.dumps(result), flush=True)
    engine.close()


if __name__ == "__main__":
    main()
