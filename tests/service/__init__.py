"""End-to-end tests of the BentoML service over real HTTP."""
