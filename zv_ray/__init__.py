"""zv-ray: LRM-Zero (procedural Zeroverse data + GS-LRM) at cluster scale on Ray."""

__version__ = "0.1.0"
