"""Low-level tensor operations shared by models and samplers."""
