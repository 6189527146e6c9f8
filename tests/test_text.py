"""Text views of states and changes."""

from conftest import act

from e2wm.simulator.protocol import Action
from e2wm.simulator.text import describe_action, describe_change, describe_state


def test_describe_action():
    put = Action.parse("[PUTIN] <food_salt> (1) <microwave> (2)")
    assert describe_action(put) == "Put food salt in microwave."
    assert describe_action(Action.parse("[SWITCHON] <tv> (3)")) == "Switch on tv."
    assert describe_action(Action.parse("[STANDUP]")) == "Stand up."


def test_change_and_state_views_follow_the_simulator(sim):
    assert "in the dining room" in describe_change(sim, act(sim, "WALK", "cupboard").change)
    assert describe_change(sim, act(sim, "OPEN", "cupboard").change) == "The cupboard is open."
    grabbed = describe_change(sim, act(sim, "GRAB", "water_glass").change)
    assert "The agent is holding the water glass in the right hand." in grabbed
    assert "The water glass is no longer inside the cupboard." in grabbed
    state = describe_state(sim, [sim.room_of(sim.state.char_id)])
    assert state.startswith("The agent is in the dining room. The agent is holding the water glass.")
    act(sim, "WALK", "kitchen_counter")
    put = describe_change(sim, act(sim, "PUTBACK", "water_glass", "kitchen_counter").change)
    assert put == "The water glass is on the kitchen counter. The agent is no longer holding the water glass."


def test_agent_name_is_configurable(sim):
    act(sim, "WALK", "cupboard")
    assert describe_state(sim, names=("Mary",)).startswith("Mary is in the dining room.")
