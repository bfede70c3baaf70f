"""ShopSim internals: the latent world (:mod:`.world`) and the event engine (:mod:`.engine`).

The public entry points are :func:`shopml.data.simulator.simulate` and the truth functions in
:mod:`shopml.data.oracle`.
"""
