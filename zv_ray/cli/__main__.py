"""`python -m zv_ray.cli ...` is the `zv-ray` command."""

from zv_ray.cli import main

main()
