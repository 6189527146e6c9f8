import pytest

from e2wm.errors import E2WMError
from e2wm.simulator.protocol import Action, Target


def test_parse_program_line_with_script_instance():
    action = Action.parse("[PUTBACK] <water_glass> (1.1000) <cupboard> (1.229)")
    assert action == Action("PUTBACK", (Target("water_glass", 1000), Target("cupboard", 229)))
    assert str(action) == "[PUTBACK] <water_glass> (1000) <cupboard> (229)"
    assert Action.parse(str(action)) == action


def test_parse_zero_argument_action():
    assert Action.parse("  [STANDUP]  ") == Action("STANDUP")


@pytest.mark.parametrize(
    "line", ["WALK kitchen", "[WALK] <kitchen>", "[WALK] <kitchen> (abc)", "[WALK] (1)", "[GRAB] <cup> (1.x)"]
)
def test_malformed_lines_raise_one_line_error(line):
    with pytest.raises(E2WMError, match="malformed"):
        Action.parse(line)
