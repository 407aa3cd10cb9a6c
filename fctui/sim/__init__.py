"""FusionCompute VRM simulator (REST API, data endpoint, control API)."""

from fctui.sim.app import create_app
from fctui.sim.generator import Simulator
from fctui.sim.server import EmbeddedSimulator
from fctui.sim.state import DEMO_FILL_SCALE, ManualClock, OffsetClock, RealClock, SimConfig, SimUser, demo_config

__all__ = ["DEMO_FILL_SCALE", "SimConfig", "SimUser", "Simulator", "demo_config", "create_app", "EmbeddedSimulator",
           "ManualClock", "OffsetClock", "RealClock"]
