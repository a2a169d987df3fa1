"""Real-engine serving A/B of attn-sched-plugin: fresh SGLang / vLLM servers per variant and run.

Each run starts one server (one variant, one model, one TP size), runs the engine's own benchmark
client on SGLang PR #20943's workloads, records logprobs of fixed prompts, the plugin's log lines and the
engine's ``prepare_varlen_num_blocks`` launches per decode step from a profiler trace, stops the
server, and writes its record at once, so a plan interrupted by the GPU machine's time limits
continues where it stopped. ``python3 -m integration.serve_ab --help``; see integration/README.md.
"""
