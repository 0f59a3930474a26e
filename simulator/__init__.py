"""Digital twin of a GPU fleet. So far: sysfs fabric trees for the agent's fabric collector."""

from .fabric_sysfs import IbPort, write_infiniband_tree

__all__ = ["IbPort", "write_infiniband_tree"]
