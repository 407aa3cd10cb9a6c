"""FusionCompute VRM simulator (REST API, data endpoint, control API)."""

from fctui.sim.app import create_app
from fctui.sim.server import EmbeddedSimulator
from fctui.sim.state import ManualClock, RealClock, SimConfig, Simulator

__all__ = ["SimConfig", "Simulator", "create_app", "EmbeddedSimulator", "ManualClock", "RealClock"]
