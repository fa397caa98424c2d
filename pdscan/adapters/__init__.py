"""Framework adapters (PyTorch, JAX): differentiable wrappers over the backends.

Each adapter module imports its framework, so it is only loaded when that
framework's arrays reach ``pdscan.scan`` or the user imports ``pdscan.torch`` /
``pdscan.jax``.
"""
