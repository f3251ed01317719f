"""Drop-in APIs of other energy tools, so their users switch by changing import lines.

:mod:`perseus.compat.zeus` mirrors Zeus's public training-script API on top of Perseus's
own monitor, power-limit optimizer and batch size optimizer.
"""
