"""Adapters for the pipeline engines users train with: Megatron-Core, torchtitan, DeepSpeed, Merak.

See ``merak_integration/ADAPTERS.md``.
"""
