"""Hook adapters for pipeline engines Perseus does not run itself (Merak, DeepSpeed).

See ``merak_integration/ADAPTERS.md``.
"""
