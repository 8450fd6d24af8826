"""Shared by evaluation and training (and the render actors): which views a sample uses, how rendered views
become a model batch on a device, and one forward pass from input views to rendered Gaussians."""
