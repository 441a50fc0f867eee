"""MCMC kernels sharing the ``init``/``step`` protocol of ``ebm.samplers.base``."""
