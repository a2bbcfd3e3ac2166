"""The built-in methods. Importing a method's package registers it (platform/registry.py: METHODS);
the platform finds methods only through that registry."""
from evoplat.methods import consequential, es, grad_instructor, hybrid, rec_lra, rso  # noqa: F401
