"""opencood: cooperative 3D perception (OpenCOOD -> HEAL -> GenComm lineage), driven by YAML configs."""

__version__ = "0.1.0"
