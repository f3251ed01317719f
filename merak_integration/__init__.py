"""Pipeline-parallel training workers that apply Perseus frequency plans.

The package builds the models of the Merak-Zeus examples (randomly initialised), cuts them into
pipeline stages, runs them on ``torch.distributed.pipelining`` and calls the framework-neutral hook
API (:mod:`merak_integration.hooks`) around every forward and backward of every microbatch, which
is where a Perseus client sets that instruction's GPU frequency and measures it.

Entry points: ``python -m merak_integration.launch MODEL MB NMB [options]`` (what ``bash run.sh``
calls) and :mod:`merak_integration.adapters` for users of Merak or DeepSpeed engines.
"""
