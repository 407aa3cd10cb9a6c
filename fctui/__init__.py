"""fctui: a terminal console for agentless backup and restore of FusionCompute VMs."""
__version__ = "0.1.0"
