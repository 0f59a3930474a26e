"""Digital twin of a GPU fleet. So far: sysfs fabric trees for the agent's fabric collector."""

if __name__ != "gpuslo.simulator":  # the folder is gpuslo.simulator; one module, one name
    raise ImportError(
        "import gpuslo.simulator, not simulator: this folder is part of the gpuslo package"
    )


from .fabric_sysfs import IbPort, write_infiniband_tree

__all__ = ["IbPort", "write_infiniband_tree"]
