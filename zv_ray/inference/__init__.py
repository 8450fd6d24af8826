"""Shared by training, evaluation, the viewer (and the render actors): which views a sample uses, posed views
(the one type for images with their cameras) on a device, and one forward pass from input views to Gaussians
and their renders."""
