"""Launch arguments reach the actor node only when given: an unset argument must not blank the params file's
value (a parameter dict in a launch ``Node`` always wins over the params files)."""
import ast
from pathlib import Path

import pytest

from robot_rl.hardware.ros2.config import LAUNCH_FORWARDED, RobotNodeConfig, launch_overrides

LAUNCH = Path(__file__).resolve().parents[2] / "launch"


def test_only_given_arguments_are_forwarded():
    given = launch_overrides({"learner_host": "10.0.0.5", "train_config": "", "keys_dir": "", "key_name": "",
                              "actor_id": "robot2"})
    assert given == {"learner_host": "10.0.0.5", "actor_id": "robot2"}
    assert launch_overrides({name: "" for name in LAUNCH_FORWARDED}) == {}
    with pytest.raises(KeyError, match="learner_hots"):
        launch_overrides({"learner_hots": "10.0.0.5"})


def test_forwarded_arguments_are_actor_node_parameters():
    fields = set(RobotNodeConfig.__dataclass_fields__)
    assert set(LAUNCH_FORWARDED) <= fields


@pytest.mark.parametrize("name", ["real.launch.py", "sim.launch.py"])
def test_launch_files_forward_through_launch_overrides(name):
    """launch/launch_ros are not installable here, so the files cannot run: check that every node parameter dict
    comes from launch_overrides (no dict literal of LaunchConfiguration) and that each forwarded name is declared."""
    source = (LAUNCH / name).read_text()
    tree = ast.parse(source)
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "launch_overrides" in calls and "OpaqueFunction" in calls
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            assert not any(isinstance(v, ast.Call) and getattr(v.func, "id", "") == "LaunchConfiguration"
                           for v in node.values), f"{name}: a LaunchConfiguration dict forwards unset arguments"
    assert "for name, text in LAUNCH_FORWARDED.items()" in source  # every forwarded name is a declared argument
