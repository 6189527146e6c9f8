"""Plain-English views of a scene state and of a state change, reused by the corpus builders."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from virtualhome_eval.simulation.evolving_graph.environment import Relation

from e2wm.simulator.protocol import Action, StateChange
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator

STATE_WORDS = {
    "OPEN": "open",
    "CLOSED": "closed",
    "ON": "on",
    "OFF": "off",
    "DIRTY": "dirty",
    "CLEAN": "clean",
    "PLUGGED_IN": "plugged in",
    "PLUGGED_OUT": "unplugged",
}
AGENT_STATE_WORDS = {"SITTING": "sitting", "LYING": "lying down"}
VERB_WORDS = {
    "WALK": "walk to",
    "RUN": "run to",
    "FIND": "find",
    "GRAB": "grab",
    "OPEN": "open",
    "CLOSE": "close",
    "SWITCHON": "switch on",
    "SWITCHOFF": "switch off",
    "PUTBACK": "put",
    "PUTIN": "put",
    "PUTOBJBACK": "put back",
    "SIT": "sit on",
    "LIE": "lie on",
    "STANDUP": "stand up",
    "DROP": "drop",
    "RELEASE": "release",
    "DRINK": "drink from",
    "READ": "read",
    "WATCH": "watch",
    "TYPE": "type on",
    "PLUGIN": "plug in",
    "PLUGOUT": "unplug",
    "PUTON": "put on",
    "PUTOFF": "take off",
    "LOOKAT": "look at",
    "TURNTO": "turn to",
    "POINTAT": "point at",
    "TOUCH": "touch",
    "WIPE": "wipe",
    "WASH": "wash",
    "RINSE": "rinse",
    "SCRUB": "scrub",
    "SQUEEZE": "squeeze",
    "POUR": "pour",
    "CUT": "cut",
    "EAT": "eat",
    "GREET": "greet",
    "PUSH": "push",
    "PULL": "pull",
    "MOVE": "move",
    "SLEEP": "sleep",
    "WAKEUP": "wake up",
}
_PREPOSITION = {"PUTBACK": "on", "PUTIN": "in", "POUR": "into"}
_QUIET = ("CLEAN", "PLUGGED_IN")  # usual states, not worth a sentence


def noun(class_name: str) -> str:
    """``water_glass`` -> ``water glass``."""
    return class_name.replace("_", " ")


def describe_action(action: Action) -> str:
    """``[PUTIN] <milk> (12) <fridge> (306)`` -> ``Put milk in fridge.``"""
    words = VERB_WORDS.get(action.verb, action.verb.lower())
    parts = [words] + [noun(t.name) for t in action.targets[:1]]
    if len(action.targets) > 1:
        parts += [_PREPOSITION.get(action.verb, "with"), noun(action.targets[1].name)]
    text = " ".join(parts)
    return text[0].upper() + text[1:] + "."


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


AGENT = ("the agent",)


def _who(sim: VirtualHomeSimulator, node_id: int, names: Sequence[str]) -> str:
    """A character by its name in ``names`` (by index; ``person K`` past the end), else the object."""
    chars = sim.state.char_ids
    if node_id in chars:
        k = chars.index(node_id)
        return names[k] if k < len(names) else f"person {k + 1}"
    return "the " + noun(sim.name(node_id))


def _place(sim: VirtualHomeSimulator, node_id: int, names: Sequence[str]) -> list[str]:
    """Where a node is: on/inside other objects, else in its room."""
    subject = _who(sim, node_id, names)
    out = []
    for rel, word in ((Relation.ON, "on"), (Relation.INSIDE, "inside")):
        for dst in sorted(sim.state.ids_from(node_id, rel)):
            if sim.node(dst).category != "Rooms":
                out.append(f"{subject} is {word} the {noun(sim.name(dst))}")
    room = sim.room_of(node_id)
    if room is not None and not out:
        out.append(f"{subject} is in the {noun(sim.name(room))}")
    return out


def describe_state(
    sim: VirtualHomeSimulator, focus: Iterable[int] = (), names: Sequence[str] = AGENT, actor: int = 0
) -> str:
    """Character ``actor``'s room, hands and posture, and the states and places of ``focus`` objects."""
    char = sim.state.char_ids[actor]
    agent = _who(sim, char, names)
    sentences = _place(sim, char, names)
    char_states = sim.states_of(char)
    sentences += [f"{agent} is {word}" for s, word in AGENT_STATE_WORDS.items() if s in char_states]
    held = sim.holds(actor)
    things = " and ".join(f"the {noun(sim.name(i))}" for i in held) if held else "nothing"
    sentences.append(f"{agent} is holding {things}")
    for node_id in dict.fromkeys(focus):
        node = sim.node(node_id)
        if node is None or node_id in held or node.category in ("Rooms", "Characters"):
            continue
        states = sorted(sim.states_of(node_id))
        words = [STATE_WORDS[s] for s in states if s in STATE_WORDS and s not in _QUIET]
        if words:
            sentences.append(f"the {noun(node.class_name)} is " + " and ".join(words))
        sentences += _place(sim, node_id, names)
    return " ".join(_sentence(s) for s in sentences)


def describe_change(sim: VirtualHomeSimulator, change: StateChange, names: Sequence[str] = AGENT) -> str:
    """What a step changed: new object states, new places, what characters hold or let go of."""
    chars = set(sim.state.char_ids)

    def who(node_id: int) -> str:
        return _who(sim, node_id, names)

    sentences = []
    for node in change.nodes:
        for s in node.added:
            if node.id in chars and s in AGENT_STATE_WORDS:
                sentences.append(f"{who(node.id)} is {AGENT_STATE_WORDS[s]}")
            elif s in STATE_WORDS:
                sentences.append(f"{who(node.id)} is {STATE_WORDS[s]}")
        postures = [s for s in (*node.added, *node.removed) if s in AGENT_STATE_WORDS]
        if node.id in chars and postures and not any(s in AGENT_STATE_WORDS for s in node.added):
            sentences.append(f"{who(node.id)} is standing")
    for edge in change.edges_added:
        dst = sim.node(edge.to_id)
        if edge.relation == "INSIDE" and dst.category == "Rooms":
            if edge.from_id in chars:
                sentences.append(f"{who(edge.from_id)} is in the {noun(dst.class_name)}")
        elif edge.relation == "INSIDE":
            sentences.append(f"{who(edge.from_id)} is inside the {noun(dst.class_name)}")
        elif edge.relation == "ON":
            sentences.append(f"{who(edge.from_id)} is on the {noun(dst.class_name)}")
        elif edge.relation in ("HOLDS_RH", "HOLDS_LH"):
            hand = "right" if edge.relation == "HOLDS_RH" else "left"
            sentences.append(f"{who(edge.from_id)} is holding the {noun(dst.class_name)} in the {hand} hand")
    for edge in change.edges_removed:
        dst = sim.node(edge.to_id)
        if edge.relation in ("HOLDS_RH", "HOLDS_LH"):
            sentences.append(f"{who(edge.from_id)} is no longer holding the {noun(dst.class_name)}")
        elif edge.relation in ("ON", "INSIDE") and dst.category != "Rooms":
            word = "on" if edge.relation == "ON" else "inside"
            sentences.append(f"{who(edge.from_id)} is no longer {word} the {noun(dst.class_name)}")
    return " ".join(_sentence(s) for s in dict.fromkeys(sentences))
