"""Ray actor classes: thin callable wrappers over zv_ray's pure functions, with their resource requests.

A top-level package so it imports the same way from an installed wheel and under
`ray job submit --working-dir .` (where the working directory is on every worker's path).
"""

from actors.render import MeshRenderActor, ZeroverseRenderActor
from actors.samples import SampleActor

__all__ = ["MeshRenderActor", "SampleActor", "ZeroverseRenderActor"]
